//! Throwaway databases for store tests, so every store test runs on SQLite and on
//! PostgreSQL (quickwit's one-suite-many-backends pattern).
//!
//! PostgreSQL tests use `VERN_TEST_DATABASE_URL`. Without it they are skipped, unless
//! `VERN_REQUIRE_POSTGRES=1` (set by CI), which makes them fail instead.

use sea_orm::ConnectionTrait;

use crate::db::DbTarget;

/// Environment variable holding the PostgreSQL URL for tests.
pub const PG_URL_VAR: &str = "VERN_TEST_DATABASE_URL";
/// Environment variable that turns a skipped PostgreSQL test into a failure.
pub const REQUIRE_PG_VAR: &str = "VERN_REQUIRE_POSTGRES";

/// The PostgreSQL URL for tests; `None` when it is unset or empty (as the README says:
/// `VERN_TEST_DATABASE_URL=` skips PostgreSQL tests), and then a failure instead if
/// `VERN_REQUIRE_POSTGRES=1`. Every harness asks here.
pub fn pg_url() -> Option<String> {
    let url = std::env::var(PG_URL_VAR).unwrap_or_default();
    if url.trim().is_empty() {
        assert!(
            std::env::var(REQUIRE_PG_VAR).as_deref() != Ok("1"),
            "{REQUIRE_PG_VAR}=1 but {PG_URL_VAR} is not set: PostgreSQL tests must run"
        );
        return None;
    }
    Some(url)
}

/// A database that lives as long as the test.
pub struct TestDb {
    /// Where to connect.
    pub target: DbTarget,
    /// "sqlite" or "postgres".
    pub backend: &'static str,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh SQLite file.
    pub fn sqlite(service: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = DbTarget::for_service(None, dir.path(), service);
        Self {
            target,
            backend: "sqlite",
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL schema, or `None` when no URL is configured (and PostgreSQL
    /// is not required).
    pub fn postgres(service: &str) -> Option<Self> {
        let Some(url) = pg_url() else {
            eprintln!("skipping PostgreSQL test: {PG_URL_VAR} not set");
            return None;
        };
        let schema = format!("test_{service}_{}", uuid::Uuid::new_v4().simple());
        Some(Self {
            target: DbTarget {
                url,
                schema: Some(schema),
                max_connections: None,
            },
            backend: "postgres",
            _dir: None,
        })
    }

    /// Drops the PostgreSQL schema (SQLite files go with the temp dir).
    pub async fn cleanup(self) {
        if let Some(schema) = &self.target.schema {
            drop_schemas(&self.target.url, std::slice::from_ref(schema)).await;
        }
    }
}

/// Drops PostgreSQL schemas (best effort; used after tests).
pub async fn drop_schemas(url: &str, schemas: &[String]) {
    if let Ok(db) = sea_orm::Database::connect(url.to_owned()).await {
        for schema in schemas {
            let _ = db
                .execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await;
        }
        let _ = db.close().await;
    }
}

/// Defines each listed async test function `fn(DbTarget)` twice: on SQLite and on
/// PostgreSQL.
#[macro_export]
macro_rules! store_test_suite {
    ($service:literal: $($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    let db = $crate::testing::TestDb::sqlite($service);
                    super::$name(db.target.clone()).await;
                    db.cleanup().await;
                }

                #[tokio::test]
                async fn postgres() {
                    let Some(db) = $crate::testing::TestDb::postgres($service) else { return };
                    super::$name(db.target.clone()).await;
                    db.cleanup().await;
                }
            }
        )+
    };
}

/// Raw reads of a store for tests that prove no plaintext is at rest.
pub mod raw {
    use crate::db::Db;
    use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement};

    use crate::db::DbTarget;

    /// The tables of the connection's schema (SQLite: the file).
    pub async fn tables(db: &Db) -> Vec<String> {
        let sql = match db.get_database_backend() {
            DbBackend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
            _ => {
                "SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = current_schema()"
            }
        };
        db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .expect("tables")
            .iter()
            .map(|r| r.try_get::<String>("", "name").expect("name"))
            .collect()
    }

    /// A cell rendered: blobs as their bytes, everything else as text.
    fn render(row: &QueryResult, col: &str) -> Vec<u8> {
        if let Ok(v) = row.try_get::<Option<Vec<u8>>>("", col) {
            return v.unwrap_or_default();
        }
        let text = if let Ok(v) = row.try_get::<Option<String>>("", col) {
            v
        } else if let Ok(v) = row.try_get::<Option<i64>>("", col) {
            v.map(|x| x.to_string())
        } else if let Ok(v) = row.try_get::<Option<i32>>("", col) {
            v.map(|x| x.to_string())
        } else if let Ok(v) = row.try_get::<Option<bool>>("", col) {
            v.map(|x| x.to_string())
        } else if let Ok(v) = row.try_get::<Option<chrono::DateTime<chrono::Utc>>>("", col) {
            v.map(|x| x.to_rfc3339())
        } else if let Ok(v) = row.try_get::<Option<chrono::NaiveDateTime>>("", col) {
            v.map(|x| x.to_string())
        } else {
            // Types no store uses for values (e.g. floats) render as nothing.
            None
        };
        text.unwrap_or_default().into_bytes()
    }

    /// (`table.column`, cell) of every cell of every table, by `SELECT *`.
    pub async fn dump(db: &Db) -> Vec<(String, Vec<u8>)> {
        let mut out = vec![];
        for table in tables(db).await {
            let rows = db
                .query_all_raw(Statement::from_string(
                    db.get_database_backend(),
                    format!("SELECT * FROM \"{table}\""),
                ))
                .await
                .expect("select");
            for row in &rows {
                for col in row.column_names() {
                    out.push((format!("{table}.{col}"), render(row, &col)));
                }
            }
        }
        out
    }

    /// The cells of `dump` that contain `needle`, by name.
    pub async fn cells_containing(db: &Db, needle: &[u8]) -> Vec<String> {
        dump(db)
            .await
            .into_iter()
            .filter(|(_, v)| contains(v, needle))
            .map(|(c, _)| c)
            .collect()
    }

    /// Whether `needle` occurs in `hay`.
    pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
        !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
    }

    /// The SQLite file of `target` and its `-wal` and `-shm` files, those that exist
    /// (none for PostgreSQL).
    pub fn sqlite_files(target: &DbTarget) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let Some(path) = crate::db::sqlite_file(target) else {
            return vec![];
        };
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let p = std::path::PathBuf::from(p);
                std::fs::read(&p).ok().map(|b| (p, b))
            })
            .collect()
    }
}

/// A throwaway certificate authority for TLS tests: it signs server certificates (for
/// `localhost` and 127.0.0.1) and client certificates, written as PEM files.
pub struct TestPki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl TestPki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = params.self_signed(&ca_key).expect("CA");
        Self { ca, ca_key }
    }

    /// The CA certificate as PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// Writes the CA certificate to `path`.
    pub fn write_ca(&self, path: &std::path::Path) {
        write_atomically(path, &self.ca_pem());
    }

    /// A server certificate for `localhost` and 127.0.0.1, written to `cert` and `key`
    /// (each replaced atomically, as a Secret volume is); its DER.
    pub fn write_server(&self, cert: &std::path::Path, key: &std::path::Path) -> Vec<u8> {
        self.write_leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            cert,
            key,
        )
    }

    /// A client certificate, written to `cert` and `key`; its DER.
    pub fn write_client(&self, cert: &std::path::Path, key: &std::path::Path) -> Vec<u8> {
        self.write_leaf(
            vec![],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            cert,
            key,
        )
    }

    fn write_leaf(
        &self,
        names: Vec<String>,
        usage: rcgen::ExtendedKeyUsagePurpose,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Vec<u8> {
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![usage];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "vern test");
        let leaf = params
            .signed_by(&leaf_key, &self.ca, &self.ca_key)
            .expect("sign");
        write_atomically(key, &leaf_key.serialize_pem());
        write_atomically(cert, &leaf.pem());
        leaf.der().to_vec()
    }
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}
