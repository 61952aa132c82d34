//! `writeback-e2e-bench`: the end-to-end benchmark. It is a program, not a timed
//! test. In one invocation, against the same Samba AD DCs, it runs the same
//! password resets two ways and compares them:
//!
//! - **raw LDAPS**: a client that keeps one connection per worker, bound as the
//!   agents' service account, looks each user up by UPN and replaces `unicodePwd`;
//! - **through writeback**: the control plane's public `ResetPassword` over gRPC,
//!   carried by the relay to an agent, which applies it to the same DC — the
//!   release binaries as separate processes, set up as an operator would
//!   ([`stack`]): two forests, two agents in the first, the throttle off.
//!
//! At each concurrency it prints resets per second, p50 and p99 latency and the
//! ratio; then it drives both forests at once and compares that with one. Build with
//! `cargo build --release --bins` and run `target/release/writeback-e2e-bench` as
//! root (the DCs need it); `--help` for the options.

mod load;
mod stack;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use load::{Api, Sample, Window};
use stack::{Shape, Stack};

/// End-to-end benchmark (see the crate docs).
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Users per domain, reset in turn.
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Concurrencies to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    concurrency: Vec<usize>,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Concurrency per forest of the two-forest run.
    #[arg(long, default_value_t = 16)]
    forest_concurrency: usize,
    /// Where the writeback binaries are (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the work directory (configs, logs) instead of removing it.
    #[arg(long)]
    keep: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WRITEBACK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) || args.users == 0 {
        bail!("--concurrency and --users must be positive");
    }
    let bin = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory")?
            .to_path_buf(),
    };
    for b in [
        "writeback-control-plane",
        "writeback-relay",
        "writeback-agent",
        "writebackctl",
    ] {
        if !bin.join(b).exists() {
            bail!(
                "{} not found; build with `cargo build --release --bins`",
                bin.join(b).display()
            );
        }
    }
    let work = tempfile::Builder::new()
        .prefix("writeback-e2e-")
        .tempdir()?;
    let dir = work.path().to_path_buf();
    let w = Window {
        warmup: Duration::from_secs(args.warmup),
        window: Duration::from_secs(args.seconds),
    };
    eprintln!(
        "starting two domains with {} users each, the control plane, a relay and three agents in {}",
        args.users,
        dir.display()
    );
    let started = std::time::Instant::now();
    let shape = Shape {
        domains: vec!["contoso.test".into(), "fabrikam.test".into()],
        users: args.users,
        agents: vec![2, 1],
    };
    let stack = Stack::start(&bin, &dir, &shape).await?;
    eprintln!("up in {:.1} s", started.elapsed().as_secs_f64());
    let api = Api::connect(&stack.cp_url, &stack.ca_file, &stack.token_file)?;
    for d in &stack.domains {
        load::verify(&api, d).await?;
    }
    let first = stack.domains.first().context("no domain")?;

    println!(
        "\nResets of {} users in {}, {} s measured after {} s warm-up per run.\n",
        args.users,
        first.dc.domain(),
        args.seconds,
        args.warmup
    );
    println!(
        "| concurrency | raw LDAPS resets/s | writeback resets/s | ratio | p50 raw → writeback | p99 raw → writeback | added p50 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut one_forest = None;
    for &c in &args.concurrency {
        let raw = load::raw(first, stack::svc_password(), c, w).await?;
        let wb = load::writeback(&api, first, c, w).await?;
        report_errors("raw", c, &raw);
        report_errors("writeback", c, &wb);
        println!(
            "| {c} | {:.1} | {:.1} | {:.2} | {:.1} → {:.1} ms | {:.1} → {:.1} ms | {:+.1} ms |",
            raw.per_second(),
            wb.per_second(),
            wb.per_second() / raw.per_second(),
            raw.quantile_ms(0.5),
            wb.quantile_ms(0.5),
            raw.quantile_ms(0.99),
            wb.quantile_ms(0.99),
            wb.quantile_ms(0.5) - raw.quantile_ms(0.5),
        );
        if c == args.forest_concurrency {
            one_forest = Some(wb.per_second());
        }
    }

    let floor = load::floor(&api, first, w).await?;
    report_errors("floor", 1, &floor);
    println!(
        "\nThe pipeline alone (a reset of a user that does not exist, one at a time; the \
         agent's one search is the only DC work): p50 {:.2} ms, p99 {:.2} ms.",
        floor.quantile_ms(0.5),
        floor.quantile_ms(0.99)
    );

    let c = args.forest_concurrency;
    let one = match one_forest {
        Some(r) => r,
        None => load::writeback(&api, first, c, w).await?.per_second(),
    };
    let mut both = Vec::new();
    let runs = stack.domains.iter().map(|d| load::writeback(&api, d, c, w));
    for s in futures::future::join_all(runs).await {
        let s = s?;
        report_errors("two forests", c, &s);
        both.push(s.per_second());
    }
    let total: f64 = both.iter().sum();
    println!(
        "\nTwo forests driven at once ({c} in flight each): {} = {total:.1} resets/s, \
         {:.2} × one forest ({one:.1} resets/s).",
        both.iter()
            .map(|r| format!("{r:.1}"))
            .collect::<Vec<_>>()
            .join(" + "),
        total / one
    );
    drop(stack);
    if args.keep {
        let kept = work.keep();
        eprintln!("work directory kept: {}", kept.display());
    }
    Ok(())
}

fn report_errors(what: &str, c: usize, s: &Sample) {
    if s.errors > 0 {
        eprintln!(
            "{what} at concurrency {c}: {} failed resets; first: {}",
            s.errors,
            s.first_error.as_deref().unwrap_or("?")
        );
    }
}
