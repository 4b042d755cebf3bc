//! The per-call cost of the auth layer on the Check path: the permission lookup, token
//! verification (HS256; EdDSA verified and from the verified-token cache) and the whole
//! `authorize` (token, permission, role, effective tenant).
//!
//! `cargo bench -p vern-kit --bench auth`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use vern_kit::auth::{
    Claims, TokenVerifier, generate_ed25519, permission_for, sign_hs256, sign_with_pem,
};
use vern_kit::config::AuthConfig;
use vern_kit::context::authorize;
use vern_kit::verify::KeySource;

const CHECK: &str = "/vern.consents.v1.ConsentService/Check";

fn claims() -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        sub: "crm-sync".into(),
        tenant: vec!["kultur-oslo".into()],
        roles: vec!["integration".into()],
        iss: "vern-dev".into(),
        aud: "vern".into(),
        exp: now + 3600,
        nbf: now - 1,
        iat: now,
    }
}

fn bench(c: &mut Criterion) {
    c.bench_function("permission_for Check", |b| {
        b.iter(|| permission_for(black_box(CHECK)))
    });
    c.bench_function("permission_for unknown", |b| {
        b.iter(|| permission_for(black_box("/vern.x.v1.X/Nothing")))
    });

    let auth = AuthConfig::default();
    let hs = TokenVerifier::hs256(b"bench-secret-of-32-bytes-or-more!", &auth);
    let hs_token = sign_hs256(&claims(), b"bench-secret-of-32-bytes-or-more!").expect("sign");
    hs.verify(&hs_token).expect("valid");
    c.bench_function("verify HS256 (cached)", |b| {
        b.iter(|| hs.verify(black_box(&hs_token)).expect("valid"))
    });
    let hs_uncached = TokenVerifier::hs256(
        b"bench-secret-of-32-bytes-or-more!",
        &AuthConfig {
            token_cache_size: 0,
            ..AuthConfig::default()
        },
    );
    c.bench_function("verify HS256 (uncached)", |b| {
        b.iter(|| hs_uncached.verify(black_box(&hs_token)).expect("valid"))
    });

    let dir = tempfile::tempdir().expect("dir");
    let (pem, jwk) = generate_ed25519("ed-1").expect("key");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_string(&jsonwebtoken::jwk::JwkSet { keys: vec![jwk] }).expect("json"),
    )
    .expect("write");
    let ed_token = sign_with_pem(&claims(), pem.as_bytes(), "ed-1").expect("sign");
    let cached =
        TokenVerifier::new(None, Some(KeySource::File(jwks.clone())), &auth).expect("load");
    cached.verify(&ed_token).expect("valid");
    c.bench_function("verify EdDSA (cached)", |b| {
        b.iter(|| cached.verify(black_box(&ed_token)).expect("valid"))
    });
    let no_cache = AuthConfig {
        token_cache_size: 0,
        ..AuthConfig::default()
    };
    let uncached = TokenVerifier::new(None, Some(KeySource::File(jwks)), &no_cache).expect("load");
    c.bench_function("verify EdDSA (uncached)", |b| {
        b.iter(|| uncached.verify(black_box(&ed_token)).expect("valid"))
    });

    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {hs_token}").parse().expect("header"),
    );
    c.bench_function("authorize Check (HS256)", |b| {
        b.iter(|| {
            authorize(
                &hs,
                black_box(CHECK),
                black_box(&headers),
                vern_kit::context::Exposure::Public,
            )
            .expect("allowed")
            .expect("context")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
