//! `vern bench check --duration 1s --concurrency 4 --subjects 1000 --json` keeps working:
//! the arguments parse as the binary parses them, the run completes against an in-process
//! suite and the echo baseline, and the JSON object has the published fields. Not timed:
//! the figures of a debug build on a shared machine mean nothing.

use clap::Parser;
use vern_bench::BenchCommand;

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_published_json_fields() {
    let cli = Cli::try_parse_from([
        "bench",
        "check",
        "--duration",
        "1s",
        "--concurrency",
        "4",
        "--subjects",
        "1000",
        "--json",
        // One pair of rounds and a short warm-up keep the test quick.
        "--rounds",
        "1",
        "--warmup",
        "200ms",
    ])
    .expect("arguments parse");
    let BenchCommand::Check(args) = cli.command else {
        panic!("not the check scenario");
    };
    assert!(args.target.json);
    let report = vern_bench::check::run(
        &vern_cli::bench_host::CliHost,
        &vern_kit::config::Config::default(),
        &args,
        false,
    )
    .await
    .expect("bench check runs");
    let text = serde_json::to_string(&report).expect("json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    for field in [
        "rps",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "baseline_rps",
        "baseline_p99_ms",
        "ratio",
        "p99_ratio",
    ] {
        let x = v[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} is a number in {text}"));
        assert!(x.is_finite() && x > 0.0, "{field} = {x}");
    }
    assert_eq!(v["subjects"], 1000);
    assert_eq!(v["concurrency"], 4);
    assert_eq!(v["errors"], 0, "Check calls failed: {text}");
    assert_eq!(v["baseline_errors"], 0, "echo calls failed: {text}");
    let ratio = v["rps"].as_f64().unwrap_or_default() / v["baseline_rps"].as_f64().unwrap_or(1.0);
    assert!(
        (v["ratio"].as_f64().unwrap_or_default() - ratio).abs() < 1e-9,
        "one round: ratio is rps / baseline_rps"
    );
    // The text form names both sides.
    let human = vern_bench::check::text(&report);
    assert!(human.contains("echo baseline") && human.contains("ratio"));
}
