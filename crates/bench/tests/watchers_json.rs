//! `vern bench watchers` keeps working: the arguments parse as the binary parses them,
//! every watcher's stream opens and stays open through its window, and the JSON object
//! has the published fields. Not timed: a debug build's figures mean nothing.

use clap::Parser;
use vern_bench::BenchCommand;

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_opens_every_stream_and_prints_the_published_fields() {
    let cli = Cli::try_parse_from([
        "bench",
        "watchers",
        "--watchers",
        "100",
        "--rounds",
        "1",
        "--duration",
        "300ms",
        "--subjects",
        "20",
        "--json",
    ])
    .expect("arguments parse");
    let BenchCommand::Watchers(args) = cli.command else {
        panic!("not the watchers scenario");
    };
    let report = vern_bench::watchers::run(
        &vern_cli::bench_host::CliHost,
        &vern_kit::config::Config::default(),
        &args,
        false,
    )
    .await
    .expect("bench watchers runs");
    assert_eq!(report.watchers_open, 100, "every stream open: {report:?}");
    assert_eq!(report.stream_errors, 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    let v: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&report).expect("json")).expect("valid");
    for field in ["p50_ratio", "rps_without", "rps_with"] {
        assert!(v[field].as_f64().is_some_and(|x| x > 0.0), "{field} in {v}");
    }
    assert_eq!(v["p50_with_ms"].as_array().map(Vec::len), Some(1));
}
