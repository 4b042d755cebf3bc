//! The load generator: N calls in flight (one task each, closed loop) for a warm-up and
//! then a measured window; latencies of the calls completed inside the window.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

/// A boxed future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One call: given the worker index and a random number, make the call.
pub type CallFn = Arc<dyn Fn(usize, u64) -> BoxFuture<Result<(), tonic::Status>> + Send + Sync>;

/// What one measured window saw.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Calls that completed successfully in the window.
    pub calls: u64,
    /// Calls that failed in the window.
    pub errors: u64,
    /// The first error seen (code and message), if any.
    pub first_error: Option<String>,
    /// Length of the window, seconds.
    pub secs: f64,
    /// Latency of each successful call, nanoseconds.
    pub latencies_ns: Vec<u64>,
}

impl Window {
    /// Successful calls per second.
    pub fn rps(&self) -> f64 {
        if self.secs > 0.0 {
            self.calls as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Percentiles of `samples` (nanoseconds); sorts them.
pub fn percentiles(samples: &mut [u64]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1] as f64 / 1e6
    };
    let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
    Percentiles {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: samples[samples.len() - 1] as f64 / 1e6,
        mean_ms: sum as f64 / samples.len() as f64 / 1e6,
    }
}

/// Median of `values` (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Runs `call` with `concurrency` calls in flight: `warmup` unmeasured, then `measure`.
/// Only calls completing inside the measured window count.
pub async fn run(call: CallFn, concurrency: usize, warmup: Duration, measure: Duration) -> Window {
    let start = Instant::now() + Duration::from_millis(1);
    let from = start + warmup;
    let until = from + measure;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency.max(1) {
        let call = call.clone();
        tasks.spawn(async move {
            let mut rng =
                0x9E37_79B9_7F4A_7C15_u64 ^ (worker as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
            let mut w = Window::default();
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                rng = xorshift(rng);
                let result = call(worker, rng).await;
                let t1 = Instant::now();
                if t1 < from || t1 >= until {
                    continue;
                }
                match result {
                    Ok(()) => {
                        w.calls += 1;
                        w.latencies_ns.push((t1 - t0).as_nanos() as u64);
                    }
                    Err(s) => {
                        w.errors += 1;
                        if w.first_error.is_none() {
                            w.first_error = Some(format!("{:?}: {}", s.code(), s.message()));
                        }
                    }
                }
            }
            w
        });
    }
    let mut total = Window {
        secs: measure.as_secs_f64(),
        ..Default::default()
    };
    while let Some(done) = tasks.join_next().await {
        if let Ok(w) = done {
            total.calls += w.calls;
            total.errors += w.errors;
            if total.first_error.is_none() {
                total.first_error = w.first_error;
            }
            total.latencies_ns.extend(w.latencies_ns);
        }
    }
    total
}

/// xorshift64: cheap per-worker randomness for picking subjects.
pub fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// `n` HTTP/2 connections to `url` (each a tonic `Channel` of its own); the workers
/// share them round-robin. The same set-up serves vern and the echo baseline.
pub async fn connect(url: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n.max(1));
    for _ in 0..n.max(1) {
        if let Some(path) = vern_kit::client::unix_socket_path(url) {
            // `vern dev`'s internal listener.
            out.push(vern_kit::client::unix_channel(
                Endpoint::from_static("http://localhost"),
                path,
            ));
            continue;
        }
        let ch = Endpoint::from_shared(url.to_owned())?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?;
        out.push(ch);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_rank() {
        let mut v: Vec<u64> = (1..=1000).map(|i| i * 1_000_000).collect();
        v.reverse();
        let p = percentiles(&mut v);
        assert_eq!(p.p50_ms, 500.0);
        assert_eq!(p.p99_ms, 990.0);
        assert_eq!(p.p999_ms, 999.0);
        assert_eq!(p.max_ms, 1000.0);
        assert_eq!(percentiles(&mut []), Percentiles::default());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[tokio::test]
    async fn counts_only_the_window() {
        let call: CallFn = Arc::new(|_, _| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(())
            })
        });
        let w = run(
            call,
            4,
            Duration::from_millis(50),
            Duration::from_millis(200),
        )
        .await;
        // 4 in flight × 200 ms / 5 ms ≈ 160 (timer granularity makes it fewer).
        assert!(w.calls > 40 && w.calls <= 170, "{}", w.calls);
        assert_eq!(w.latencies_ns.len() as u64, w.calls);
        assert_eq!(w.errors, 0);
    }
}
