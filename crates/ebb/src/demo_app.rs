//! `ebb demo-app`: the built-in workload of the seed stories.
//!
//! One small HTTP server that reproduces the apps the stories scaled, so ebb
//! can be tried, tested and demonstrated without writing an app first:
//!
//! - S1's Flask API: `/gtg` (health), `/candidate/<name>` (GET, POST) and
//!   `/candidates`, stored in one SQLite file (or a PostgreSQL server)
//!   shared by all replicas, as the seed's DynamoDB table was shared by all
//!   instances;
//! - S2's `/api`: a JSON object of 52 random letters;
//! - `/work?cpu_ms=&sleep_ms=`: a request with a chosen CPU cost and latency,
//!   and `--cpu-budget` to make a replica saturate like a small instance, so
//!   CPU-based scaling has something to react to even on a laptop;
//! - `/stats`: counters that let tests prove no request ran twice.
//!
//! Layout: [`routes`] is the HTTP contract, [`store`] the shared database,
//! [`cpu`] the CPU burner and its budget. The contract is documented for
//! users in `docs/demo-app.md`.
//!
//! Start-up prints exactly one line to stdout, `listening on <addr>`, which
//! ebb's process driver and the tests read to learn the port when it was 0;
//! everything else is logged to stderr (the CLI sets logging up, `EBB_LOG`).
//! SIGTERM or Ctrl-C stops accepting, lets in-flight requests finish and
//! exits 0: that is how ebb drains a replica.

mod cpu;
mod routes;
mod store;

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

pub use cpu::MAX_BUDGET;
pub use routes::MAX_WORK_MS;

/// Options of `ebb demo-app`. The environment variables are how ebb's drivers
/// configure a replica without building a command line.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoAppArgs {
    /// Address to listen on. Loopback by default: ebb's balancer is the
    /// public face, replicas need not be reachable from elsewhere.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on; 0 picks a free one (see the `listening on` line).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// This replica's id, shown by `/gtg?details`, `/work` and `/stats`
    /// [default: demo-<pid>].
    #[arg(long, env = "EBB_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// Where the candidates are: a SQLite file, or a PostgreSQL server as
    /// postgres://USER[:PASS]@HOST:PORT/DB (replicas on several hosts); give
    /// every replica of a service the same one [default:
    /// $EBB_STATE_DIR/<$EBB_SERVICE or demo>-candidates.sqlite when
    /// EBB_STATE_DIR is set, else ./ebb-demo.sqlite].
    #[arg(long, env = "EBB_DEMO_DB")]
    pub db: Option<PathBuf>,

    /// CPU that `/work` may use, as a fraction of one core (0.25 = a quarter
    /// core; 2 = two cores). Work beyond it waits in a FIFO queue, so the
    /// replica saturates like a small instance [default: unlimited].
    #[arg(long, env = "EBB_DEMO_CPU_BUDGET", value_parser = parse_budget)]
    pub cpu_budget: Option<f64>,
}

/// The settings of one demo app, resolved from [`DemoAppArgs`] and the
/// environment; also what an in-process test gives [`serve`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub replica_id: String,
    /// A SQLite path, or a `postgres://` URL (see [`store::Store::open`]).
    pub db: PathBuf,
    pub cpu_budget: Option<f64>,
}

impl Settings {
    pub fn from_args(args: &DemoAppArgs) -> Settings {
        Settings::resolve(args, |key| std::env::var_os(key))
    }

    /// `env` reads the environment; a parameter so the rules can be tested.
    fn resolve(args: &DemoAppArgs, env: impl Fn(&str) -> Option<OsString>) -> Settings {
        let env = |key: &str| env(key).filter(|value| !value.is_empty());
        let replica_id = args
            .replica_id
            .clone()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("demo-{}", std::process::id()));
        let db =
            args.db.clone().filter(|path| !path.as_os_str().is_empty()).unwrap_or_else(|| match env("EBB_STATE_DIR") {
                Some(dir) => {
                    let service =
                        env("EBB_SERVICE").map_or_else(|| "demo".into(), |s| s.to_string_lossy().into_owned());
                    PathBuf::from(dir).join(format!("{service}-candidates.sqlite"))
                }
                None => PathBuf::from("ebb-demo.sqlite"),
            });
        Settings { replica_id, db, cpu_budget: args.cpu_budget }
    }
}

/// `ebb demo-app`: serves until SIGTERM or Ctrl-C, then drains and returns.
pub async fn run(args: DemoAppArgs) -> anyhow::Result<()> {
    let settings = Settings::from_args(&args);
    // Listen for the signals before announcing the address: whoever reads
    // the `listening on` line may send SIGTERM at once, and it must drain,
    // not kill.
    let shutdown = shutdown_signal()?;
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
    serve(listener, settings, shutdown).await
}

/// Serves the demo app on an already bound `listener` until `shutdown`
/// completes, then finishes the in-flight requests and returns. Taking the
/// listener lets callers bind port 0 and know the port first. Once the
/// database is open it prints `listening on <addr>` to stdout: the signal,
/// for whoever started the process, that the replica is ready.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = store::Store::open(&settings.db).await?;
    let state = Arc::new(routes::AppState {
        replica_id: settings.replica_id.clone(),
        store,
        cpu: cpu::Cpu::new(settings.cpu_budget)?,
        stats: routes::Stats::default(),
    });
    let addr = listener.local_addr().context("reading the listening address")?;
    println!("listening on {addr}");
    tracing::info!(
        message = "Demo app started.",
        %addr,
        replica = %settings.replica_id,
        db = %state.store.describe(),
        cpu_budget = ?settings.cpu_budget,
    );
    axum::serve(listener, routes::router(state)).with_graceful_shutdown(shutdown).await.context("serving HTTP")?;
    tracing::info!(message = "Demo app stopped.", replica = %settings.replica_id);
    Ok(())
}

/// Completes on the first SIGTERM or SIGINT. The handlers are installed now,
/// not when the future is first polled.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(message = "Shutting down: no new connections, finishing in-flight requests.", signal = name);
    })
}

/// `--cpu-budget`: a positive fraction of one core, at most [`MAX_BUDGET`].
fn parse_budget(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(budget) if budget.is_finite() && budget > 0.0 && budget <= MAX_BUDGET => Ok(budget),
        _ => Err(format!(
            "expected a fraction of one core above 0 and at most {MAX_BUDGET}, e.g. 0.25; omit the option for no budget"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DemoAppArgs,
    }

    fn resolve(argv: &[&str], env: &[(&str, &str)]) -> Settings {
        let args = Cli::try_parse_from(std::iter::once("demo-app").chain(argv.iter().copied())).unwrap().args;
        Settings::resolve(&args, |key| env.iter().find(|(k, _)| *k == key).map(|(_, v)| OsString::from(v)))
    }

    #[test]
    fn db_path_prefers_the_option_then_the_state_dir_then_the_working_dir() {
        let env = [("EBB_STATE_DIR", "/state"), ("EBB_SERVICE", "web")];
        assert_eq!(resolve(&["--db", "/x.sqlite"], &env).db, PathBuf::from("/x.sqlite"));
        assert_eq!(resolve(&[], &env).db, PathBuf::from("/state/web-candidates.sqlite"));
        assert_eq!(resolve(&[], &env[..1]).db, PathBuf::from("/state/demo-candidates.sqlite"));
        assert_eq!(resolve(&[], &[]).db, PathBuf::from("ebb-demo.sqlite"));
        let url = "postgres://ebb:pw@db:5432/ebb";
        assert_eq!(resolve(&["--db", url], &env).db, PathBuf::from(url));
    }

    #[test]
    fn replica_id_defaults_to_the_pid() {
        assert_eq!(resolve(&["--replica-id", "web-3"], &[]).replica_id, "web-3");
        assert_eq!(resolve(&[], &[]).replica_id, format!("demo-{}", std::process::id()));
    }

    #[test]
    fn cpu_budget_must_be_a_positive_fraction() {
        assert_eq!(parse_budget("0.25"), Ok(0.25));
        assert_eq!(parse_budget("2"), Ok(2.0));
        for bad in ["0", "-1", "NaN", "inf", "abc", "1000"] {
            assert!(parse_budget(bad).is_err(), "{bad}");
        }
    }
}
