//! `vern bench console` keeps working: the arguments parse as the binary parses them,
//! the seeded department's figures are on the page it times (the run refuses a page
//! without them), and the JSON object has the published fields. Not timed: a debug
//! build's figures mean nothing.

use clap::Parser;
use vern_bench::BenchCommand;

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_renders_the_seeded_overview_and_prints_the_published_fields() {
    let cli = Cli::try_parse_from([
        "bench",
        "console",
        "--subjects",
        "1500",
        "--requests",
        "30",
        "--renders",
        "10",
        "--json",
    ])
    .expect("arguments parse");
    let BenchCommand::Console(args) = cli.command else {
        panic!("not the console scenario");
    };
    let report = vern_bench::console::run(
        &vern_cli::bench_host::CliHost,
        &vern_kit::config::Config::default(),
        &args,
        false,
    )
    .await
    .expect("bench console runs");
    assert_eq!(report.subjects, 1500);
    assert_eq!(report.open_requests, 30);
    assert_eq!(report.renders, 10);
    let v: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&report).expect("json")).expect("valid");
    for field in ["p50_ms", "p95_ms", "p99_ms", "max_ms"] {
        assert!(v[field].as_f64().is_some_and(|x| x > 0.0), "{field} in {v}");
    }
    assert!(
        v["p50_ms"].as_f64() <= v["p95_ms"].as_f64(),
        "ordered percentiles: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_renders_the_seeded_queue_a_full_page_of_it() {
    let cli = Cli::try_parse_from([
        "bench",
        "console",
        "--page",
        "queue",
        "--subjects",
        "1000",
        "--requests",
        "60",
        "--renders",
        "5",
        "--json",
    ])
    .expect("arguments parse");
    let BenchCommand::Console(args) = cli.command else {
        panic!("not the console scenario");
    };
    let report = vern_bench::console::run(
        &vern_cli::bench_host::CliHost,
        &vern_kit::config::Config::default(),
        &args,
        false,
    )
    .await
    .expect("bench console --page queue runs (a full first page of 50 rows)");
    assert_eq!(report.open_requests, 60);
    let v: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&report).expect("json")).expect("valid");
    assert_eq!(v["page"], "queue", "{v}");
}
