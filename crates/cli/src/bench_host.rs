//! What `vern bench` borrows from this crate: the suite assembly of `vern dev` and the
//! CSV import of `vern subjects import` (vern-bench cannot depend on vern-cli).

use std::path::PathBuf;

use tokio::net::TcpListener;
use tonic::transport::Channel;
use vern_bench::{Host, ImportCounts, SuiteHandle};
use vern_kit::config::Config;

/// The [`Host`] of the `vern` binary.
#[derive(Debug, Clone, Copy, Default)]
pub struct CliHost;

#[async_trait::async_trait]
impl Host for CliHost {
    async fn start_suite(
        &self,
        config: Config,
        listener: TcpListener,
    ) -> anyhow::Result<SuiteHandle> {
        let running = crate::start_suite(config, listener).await?;
        let internal_url = running.internal_url();
        let (shutdown, handle) = (running.shutdown, running.handle);
        Ok(SuiteHandle {
            addr: running.addr,
            internal_url,
            stop: Box::new(move || {
                Box::pin(async move {
                    let _ = shutdown.send(());
                    let _ = handle.await;
                })
            }),
        })
    }

    async fn import_csv(
        &self,
        channel: Channel,
        token: String,
        tenant: String,
        csv: PathBuf,
        batch: usize,
        concurrency: usize,
    ) -> anyhow::Result<ImportCounts> {
        let client = crate::remote::Client::with_channel(channel, token);
        let (rows, mut r) = crate::import::read_csv(&csv)?;
        let started = std::time::Instant::now();
        let mut answered = Vec::with_capacity(rows.len() / batch.max(1) + 1);
        crate::import::import_rows(
            &client,
            &tenant,
            rows,
            batch,
            concurrency,
            &mut r,
            &mut |n| answered.push((started.elapsed().as_secs_f64(), n)),
        )
        .await?;
        Ok(ImportCounts {
            answered,
            rows: r.rows,
            created: r.created,
            present: r.present,
            invalid: r.invalid.len(),
            failed: r.failed.len(),
        })
    }

    async fn rotate_master(
        &self,
        channel: Channel,
        token: String,
        version: u32,
        page_size: i32,
    ) -> anyhow::Result<Vec<(&'static str, i64, i64)>> {
        let client = crate::remote::Client::with_channel(channel, token);
        let mut out = vec![];
        for service in crate::keys_cli::KEY_SERVICES {
            let done = crate::keys_cli::rotate_service(&client, service, version, page_size, false)
                .await?;
            out.push((service.name(), done.examined, done.rewrapped));
        }
        Ok(out)
    }
}
