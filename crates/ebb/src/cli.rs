//! The `ebb` command line: a thin layer over the admin API and [`crate::up`].

mod apply;
mod logs;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use ebb_core::config::{Config, ConfigError};
use ebb_core::deploy::Strategy;

use crate::client::{AdminClient, ClientError};
use crate::events::Event;
use crate::wire::{DeployRequest, DeployStatus, FleetStatus, ServiceStatus};

/// `0.1.0 (abc1234)`: the crate version and the git commit it was built
/// from (`unknown` outside a git checkout).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("EBB_GIT_COMMIT"), ")");

/// ebb runs a web application as an elastic fleet of replicas behind its own
/// load balancer, and grows and shrinks the fleet with the traffic.
#[derive(Parser)]
#[command(name = "ebb", version = VERSION, about, long_about = None)]
struct Cli {
    /// The config file; every command finds the running ebb through its
    /// admin address (`--config` too; after `logs` and `events`, `-f` means
    /// `--follow`).
    #[arg(
        short = 'f',
        long = "file",
        visible_alias = "config",
        global = true,
        default_value = "ebb.toml",
        value_name = "FILE",
        env = "EBB_CONFIG"
    )]
    file: PathBuf,
    /// ebb's own log lines (stderr): `text` (no colour codes unless stderr
    /// is a terminal), or `json`, one object per line.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"], env = "EBB_LOG_FORMAT")]
    log_format: String,
    /// Talk to the ebb whose admin API is at this URL (`http://HOST:PORT`,
    /// `https://HOST:PORT`) instead of the config file's, from any directory
    /// or machine; the token comes from EBB_TOKEN or --token-file.
    #[arg(long, global = true, value_name = "URL", env = "EBB_ADMIN")]
    admin: Option<String>,
    /// A file holding the admin token (the contents of the running ebb's
    /// <state_dir>/admin.token); EBB_TOKEN takes precedence.
    #[arg(long, global = true, value_name = "FILE", env = "EBB_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// A PEM certificate to trust for an https --admin URL (a self-signed
    /// admin certificate), besides the built-in public roots.
    #[arg(long, global = true, value_name = "FILE", env = "EBB_ADMIN_CA")]
    admin_ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the fleet(s), their balancers and the admin API; run until Ctrl-C or `ebb down` (which stop the fleet) or SIGTERM (which stops ebb only).
    ///
    /// Ctrl-C (SIGINT) and `ebb down` drain and stop every replica. SIGTERM
    /// (`kill`, `systemctl stop`/`restart`) stops ebb only: the replicas
    /// keep running and the next `ebb up` adopts them. Desired capacity is
    /// kept from the last run unless the file's replicas.desired changed;
    /// each service's line says which (docs/upgrades.md).
    Up {
        /// Take over from the ebb running on this state directory (an
        /// upgrade to this binary): it hands over its listening sockets,
        /// finishes its requests and exits; this one adopts the replicas.
        /// No connection is refused and no replica restarts. Without a
        /// running ebb, starts normally.
        #[arg(long)]
        takeover: bool,
        /// Start from the file's replicas.desired instead of the last run's
        /// (versions, certificates, history, events and the admin token are
        /// kept; replicas beyond it are retired as in a scale-in).
        #[arg(long)]
        fresh: bool,
        /// Run in the background (its output in <state_dir>/ebb.log) and
        /// return once its admin API answers.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Like --detach, then return only once every service has its
        /// desired replicas in service (as `ebb wait`); exit 1 with the
        /// reason if that does not happen within --wait-timeout.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration, requires = "wait")]
        wait_timeout: Duration,
    },
    /// Ask the running ebb to drain and stop everything, and wait until it has exited (its state directory is free).
    Down {
        /// Give up waiting after this long.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Then forget the fleet: remove the desired capacity, versions
        /// and replica records from the state directory, so that the next
        /// `ebb up` starts from the file. Certificates, the ACME account,
        /// the admin token, events and metric history are kept.
        #[arg(long)]
        forget: bool,
    },
    /// Show every service and replica: state, health, pid, port, age, CPU, in-flight, requests, protection; and a running deploy.
    Status {
        /// Print the status document as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what applying the config file would change on the running ebb,
    /// one line per change with its consequence (applied in place, rolling
    /// deploy, service started or drained, or refused: needs a restart).
    /// Changes nothing. Exit code: 0 no changes, 2 changes, 1 error.
    Plan {
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply the config file to the running ebb without a restart: policies,
    /// bounds, health checks, balancer limits, routes and TLS in place (no
    /// replica restarts); a new command, env or image as a deploy; new
    /// services and listeners started, removed ones drained. Shows the plan
    /// and asks first on a terminal. A file with any error changes nothing.
    Apply {
        /// Apply without asking.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Wait until every service (or SERVICE) has its desired replicas in
    /// service, then exit 0 — so a script never sends load into a fleet
    /// that has no replica yet (`ebb up & ebb wait && ebb load …`). Exits 1
    /// with the reason (the holding reason, the last events) on timeout.
    Wait {
        /// Only this service.
        service: Option<String>,
        /// Give up after this long.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Set a service's desired capacity (clamped to its min/max, recorded as an event).
    Scale {
        /// The service, as named in the config (`[service.NAME]`).
        service: String,
        /// The new desired number of replicas.
        desired: u32,
        /// Print the answer as JSON (service, from, to, clamped).
        #[arg(long)]
        json: bool,
    },
    /// Roll out a new version of a service (rolling or blue-green), gated on
    /// health and rolled back on failure; waits and shows progress. With no
    /// --command/--env/--image, rolls out what ebb.toml says now. Exits 1
    /// when the deploy was rolled back, 2 when it was refused.
    Deploy {
        /// The service, as named in the config.
        service: String,
        /// The new command (run through `sh -c`, `{ebb}` and `$PORT` work as in the config).
        #[arg(long)]
        command: Option<String>,
        /// A new image (services with driver = "docker" or "swarm").
        #[arg(long)]
        image: Option<String>,
        /// Set an environment variable, NAME=value (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Override the configured strategy.
        #[arg(long, value_parser = strategy_parser())]
        strategy: Option<Strategy>,
        /// Return once the deploy has started instead of waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Switch a service back: abort the running deploy (or its bake time) at
    /// once, or deploy the previous version again.
    Rollback { service: String },
    /// Protect a replica from scale-in (and from deploy replacement) until released.
    Protect {
        /// Replica id, as shown by `ebb status`.
        replica: String,
        /// Release the protection.
        #[arg(long)]
        off: bool,
    },
    /// Deliver a spot-style interruption notice: ebb starts a replacement,
    /// then drains and stops the replica before the notice runs out.
    Interrupt {
        /// Replica id, as shown by `ebb status`.
        replica: String,
        /// How long until the replica is gone.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        notice: Duration,
    },
    /// Print a one-time link that signs a browser in to the dashboard (it
    /// works once, within 60 s, and sets a session cookie; the page never
    /// receives the admin token).
    Dashboard,
    /// List the certificates the TLS listeners and the admin API serve
    /// (listener, domains, issuer, not-after, source: file or acme), renew
    /// ACME ones now, or reload certificate files now.
    Certs {
        #[command(subcommand)]
        action: Option<CertsAction>,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the event log: why the fleet changed.
    Events {
        /// Only this service's events.
        service: Option<String>,
        /// Keep printing new events as they happen.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print a replica's stdout and stderr, or every replica of a service
    /// (each line prefixed with its replica).
    Logs {
        /// A replica id (as `ebb status` shows it) or a service name.
        replica: String,
        /// Only the last N lines (of each replica).
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Keep printing as the replicas write (`-f`).
        #[arg(long)]
        follow: bool,
        /// One JSON object per line: {"replica": ID, "line": TEXT}.
        #[arg(long)]
        json: bool,
    },
    /// Check a config file without starting anything.
    Validate {
        /// The file to check, a regular file of at most 4 MiB (defaults to `ebb -f FILE validate`'s FILE, or ebb.toml).
        file: Option<PathBuf>,
    },
    /// Print a shell completion script: `ebb completions bash > /etc/bash_completion.d/ebb`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write a man page for ebb and one per command (ebb.1, ebb-up.1, ...)
    /// into a directory: `ebb man --out /usr/local/share/man/man1`.
    Man {
        /// Where to write the pages.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Run the built-in demo application (the seed stories' workload).
    DemoApp(crate::demo_app::DemoAppArgs),
    /// Run only a balancer in front of fixed backends (no fleet management).
    Proxy(crate::proxy::StaticProxyArgs),
    /// Generate HTTP load (closed model like ab/wrk/hey, open model like wrk2/vegeta), with a live view and a summary.
    Load(crate::load::LoadArgs),
    /// Replay traffic (a trace, an access log, a shape, or recorded history) against the scaling policy in virtual time, with the same autoscaler as `ebb up`.
    Simulate(crate::simulate::SimulateArgs),
}

#[derive(Subcommand, Debug)]
enum CertsAction {
    /// Renew ACME certificates now (the one holding DOMAIN, or every one)
    /// and wait until the new certificate is served; on failure the old one
    /// stays in service and the ACME server's error is printed.
    Renew {
        /// A domain of the certificate to renew.
        domain: Option<String>,
        /// Give up waiting after this long (the renewal goes on).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Load the certificate files of the TLS listeners (and the admin API's
    /// own, `[admin] tls`) again now (what SIGHUP does), instead of waiting
    /// for ebb to notice the change; prints what each serves now, or why its
    /// files do not load (the previous certificates stay in service; exit 1).
    Reload {
        /// Only this listener (`admin API` for the admin API's certificate).
        listener: Option<String>,
    },
}

/// `--strategy`: the names `ebb.toml` uses, read straight into the one
/// [`Strategy`] type the API and the controller use too.
fn strategy_parser() -> impl TypedValueParser<Value = Strategy> {
    PossibleValuesParser::new(Strategy::ALL.map(Strategy::as_str))
        .map(|name| Strategy::from_name(&name).expect("clap checked the name"))
}

/// Exit codes: 0 ok, 1 the operation failed, 2 bad input (config, arguments).
const EXIT_BAD_INPUT: u8 = 2;

pub fn main() -> ExitCode {
    let args = match load_spellings(follow_short_flag(std::env::args_os().collect())) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: ebb load: {message}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let cli = Cli::parse_from(args);
    let default_level = match cli.command {
        Command::Up { .. } | Command::DemoApp(_) | Command::Proxy(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("EBB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        // Colour codes only where a person reads them, not in log files.
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    // Dropping a runtime waits for every blocking task without limit: one
    // stuck in I/O must not keep a stopped ebb alive (`ebb down` waits for
    // the exit).
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// `ebb wait`: polls the status until each service chosen has `desired`
/// replicas in service, healthy. The running ebb may still be starting
/// (its admin API not answering yet): that is waited for too.
/// `ebb up --detach`: the same command line without `--detach`/`--wait`,
/// as a background process in its own session (a terminal's Ctrl-C or
/// hang-up does not reach it), its output in `<state_dir>/ebb.log`; returns
/// once its admin API answers, or with its log's end if it exits first.
async fn up_detached(config: &Config, client: &AdminClient) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let args: Vec<std::ffi::OsString> =
        std::env::args_os().skip(1).filter(|a| !matches!(a.to_str(), Some("-d" | "--detach" | "--wait"))).collect();
    // `--wait-timeout VALUE` belongs to this process only.
    let mut kept = Vec::new();
    let mut skip_next = false;
    for arg in args {
        if skip_next {
            skip_next = false;
            continue;
        }
        match arg.to_str() {
            Some("--wait-timeout") => skip_next = true,
            Some(a) if a.starts_with("--wait-timeout=") => {}
            _ => kept.push(arg),
        }
    }
    // Its admin API would answer for the one already running.
    if crate::state::state_dir_in_use(&config.state_dir) {
        eprintln!(
            "error: another ebb is running with the state directory {} (`ebb status` shows it, `ebb down` stops it)",
            config.state_dir.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    std::fs::create_dir_all(&config.state_dir)?;
    let log_path = config.state_dir.join("ebb.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(&kept)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            eprintln!(
                "error: ebb up exited ({status}) before its admin API answered; the end of {}:",
                log_path.display()
            );
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
            return Ok(ExitCode::FAILURE);
        }
        if client.status().await.is_ok() {
            println!(
                "ebb: running in the background (pid {}); its log is {}; `ebb status` shows the fleet, `ebb down` stops it",
                child.id(),
                log_path.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() > deadline {
            eprintln!("error: ebb up (pid {}) did not answer within 60s; see {}", child.id(), log_path.display());
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait(client: &AdminClient, only: Option<&str>, timeout: Duration) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let answer = client.status().await;
        let (ready, progress) = match &answer {
            Ok(status) => {
                let chosen: Vec<&ServiceStatus> =
                    status.services.iter().filter(|s| only.is_none_or(|name| s.name == name)).collect();
                if let (Some(name), true) = (only, chosen.is_empty()) {
                    eprintln!(
                        "error: no service named {name:?}; services: {}",
                        status.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                    );
                    return Ok(ExitCode::from(EXIT_BAD_INPUT));
                }
                let ready = chosen.iter().all(|s| s.in_service >= s.desired && s.pending == 0);
                let progress: Vec<String> =
                    chosen.iter().map(|s| format!("{}: {}/{} in service", s.name, s.in_service, s.desired)).collect();
                (ready, progress.join(", "))
            }
            Err(error) => (false, format!("waiting for ebb to answer ({error})")),
        };
        if progress != last {
            println!("{progress}");
            last = progress;
        }
        if ready {
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            eprintln!("error: not ready after {}", humantime::format_duration(timeout));
            if let Ok(status) = answer {
                for s in status.services.iter().filter(|s| only.is_none_or(|name| s.name == name)) {
                    if let Some(holding) = &s.holding {
                        eprintln!("  {}: {holding}", s.name);
                    }
                }
            }
            if let Ok(events) = client.events(only, 0).await {
                for event in events.iter().rev().take(5).rev() {
                    eprintln!("  {} {} {}: {}", event.time, event.service, event.kind.as_str(), event.reason);
                }
            }
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `ebb man`: `ebb.1` and `ebb-COMMAND.1` (and `ebb-certs-renew.1`, ...)
/// for every command, from the same definitions as `--help`.
fn write_man_pages(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    fn write(command: &clap::Command, name: &str, out: &Path) -> anyhow::Result<()> {
        let command = command.clone().name(name.to_string());
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone()).render(&mut page)?;
        let path = out.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            write(sub, &format!("{name}-{}", sub.get_name()), out)?;
        }
        Ok(())
    }
    let command = <Cli as clap::CommandFactory>::command();
    write(&command, "ebb", out)?;
    println!("man pages written to {}", out.display());
    Ok(())
}

/// `ebb logs ID -f` and `ebb events -f` mean follow, as `tail -f` and
/// `docker logs -f` do; everywhere else (and before the command) `-f` is
/// still the config file, as it always was (`--config` too; not `-c`, which
/// is `ebb load`'s concurrency as in hey, wrk and ab).
fn follow_short_flag(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let i = command_index(&args);
    let command = args.get(i).map(|a| a.to_string_lossy().into_owned());
    if matches!(command.as_deref(), Some("logs" | "events")) {
        for arg in args.iter_mut().skip(i + 1) {
            if arg == "-f" {
                *arg = "--follow".into();
            }
        }
    }
    args
}

/// Where the command is among the arguments (after ebb's global options).
fn command_index(args: &[std::ffi::OsString]) -> usize {
    let takes_value = ["-f", "--file", "--config", "--log-format", "--admin", "--token-file", "--admin-ca"];
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].to_string_lossy();
        if takes_value.contains(&arg.as_ref()) {
            i += 2;
        } else if arg.starts_with('-') {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// `ebb load` with hey's, wrk's or ab's spellings: mapped or refused
/// (`load::spelling`).
fn load_spellings(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>, String> {
    let i = command_index(&args);
    if args.get(i).is_none_or(|a| a != "load") {
        return Ok(args);
    }
    let rest: Vec<String> = args[i + 1..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let mapped = crate::load::spelling::translate(&rest)?;
    Ok(args[..=i].iter().cloned().chain(mapped.into_iter().map(Into::into)).collect())
}

/// Reads and validates a config file; errors are already user-ready.
fn load_config(path: &Path) -> Result<Config, String> {
    let source = crate::config_file::read(path).map_err(|e| e.to_string())?;
    Config::parse(&source, path).map_err(|e| e.to_string())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let target = crate::client::AdminTarget {
        url: cli.admin.clone(),
        ca: cli.admin_ca.clone(),
        token_file: cli.token_file.clone(),
    };
    let config = match &cli.command {
        Command::DemoApp(args) => return crate::demo_app::run(args.clone()).await.map(|()| ExitCode::SUCCESS),
        Command::Proxy(args) => return crate::proxy::run_static(args.clone()).await.map(|()| ExitCode::SUCCESS),
        Command::Load(args) => return crate::load::run(args.clone(), &cli.file).await,
        Command::Simulate(args) => return crate::simulate::run(args.clone(), &cli.file).await,
        Command::Validate { file } => {
            let path = file.as_ref().unwrap_or(&cli.file);
            return Ok(match load_config(path) {
                Ok(config) => {
                    // Certificate files are read as `ebb up` reads them.
                    match crate::tls::check_config(&config) {
                        Ok((_, warnings)) => warnings.iter().for_each(|w| eprintln!("{w}")),
                        Err(error) => {
                            eprintln!("{error}");
                            return Ok(ExitCode::from(EXIT_BAD_INPUT));
                        }
                    }
                    println!(
                        "{}: ok ({} service{}: {})",
                        path.display(),
                        config.services.len(),
                        if config.services.len() == 1 { "" } else { "s" },
                        config.services.keys().cloned().collect::<Vec<_>>().join(", ")
                    );
                    for warning in crate::up::host_warnings(&config) {
                        eprintln!("{}: warning: {warning}", path.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("{message}");
                    ExitCode::from(EXIT_BAD_INPUT)
                }
            });
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "ebb", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man { out } => return write_man_pages(out).map(|()| ExitCode::SUCCESS),
        Command::Plan { json } => return apply::plan(&cli.file, &target, *json).await,
        Command::Apply { yes } => return apply::apply(&cli.file, &target, *yes).await,
        Command::Logs { replica, tail, follow, json } => {
            let config = match load_config(&cli.file) {
                Ok(c) => c,
                Err(message) => {
                    eprintln!("{message}");
                    return Ok(ExitCode::from(EXIT_BAD_INPUT));
                }
            };
            return logs::logs(&config, replica, *tail, *follow, *json).await;
        }
        _ => None,
    };
    // With --admin, a command that only talks to the running ebb needs no
    // config file (it may be on another machine).
    let config = match config {
        Some(config) => Some(config),
        None if target.is_remote() && !matches!(cli.command, Command::Up { .. }) && !cli.file.exists() => None,
        None => match load_config(&cli.file) {
            Ok(config) => Some(config),
            Err(message) => {
                eprintln!("{message}");
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        },
    };
    let client = match target.client(config.as_ref()) {
        Ok(client) => client,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    match cli.command {
        Command::Up { detach, wait: wait_ready, wait_timeout, .. } if detach || wait_ready => {
            let Some(config) = config else { unreachable!("ebb up always reads its config file") };
            let code = up_detached(&config, &client).await?;
            if code != ExitCode::SUCCESS || !wait_ready {
                return Ok(code);
            }
            wait(&client, None, wait_timeout).await
        }
        Command::Up { takeover, fresh, .. } => {
            let Some(config) = config else { unreachable!("ebb up always reads its config file") };
            match crate::up::up(config, crate::carry_over::UpOptions { takeover, fresh }).await {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(error) => match error.downcast::<ConfigError>() {
                    // Already located and rendered: print it as `validate` would.
                    Ok(config_error) => {
                        eprintln!("{config_error}");
                        Ok(ExitCode::from(EXIT_BAD_INPUT))
                    }
                    Err(error) => Err(error),
                },
            }
        }
        Command::Down { timeout, forget } => {
            // A remote ebb's state directory is not here: wait for its API
            // only. Local: also for its lock and process.
            let local = config.as_ref().filter(|_| !target.is_remote());
            let code = down(&client, local.map(|c| c.state_dir.as_path()), timeout).await?;
            if forget {
                let Some(config) = local else {
                    eprintln!("error: --forget edits the local state file; run it on the machine of that ebb, without --admin");
                    return Ok(ExitCode::from(EXIT_BAD_INPUT));
                };
                let (services, replicas) = crate::state::forget_fleet(&config.state_dir)?;
                println!(
                    "ebb: forgot the fleet: {services} service record{} (desired capacity, versions) and {replicas} replica record{} removed from {}; certificates, the ACME account, the admin token, events and metric history are kept",
                    if services == 1 { "" } else { "s" },
                    if replicas == 1 { "" } else { "s" },
                    config.state_dir.join(crate::state::STATE_FILE).display()
                );
            }
            Ok(code)
        }
        Command::Wait { service, timeout } => wait(&client, service.as_deref(), timeout).await,
        Command::Status { json } => {
            let status = client.status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", render_status(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Scale { service, desired, json } => {
            let outcome = client.scale(&service, desired, "manual (ebb scale)").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&outcome)?);
                return Ok(ExitCode::SUCCESS);
            }
            match &outcome.clamped {
                Some(why) => println!("{}: desired {} -> {}; capped: {why}", outcome.service, outcome.from, outcome.to),
                None => println!("{}: desired {} -> {}", outcome.service, outcome.from, outcome.to),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Events { service, follow, json } => events(&client, service.as_deref(), follow, json).await,
        Command::Dashboard => {
            let login = client.dashboard_login().await?;
            println!("Open this link in your browser within {} s (it works once):", login.expires_in_s);
            println!("{}", login.url);
            Ok(ExitCode::SUCCESS)
        }
        Command::Deploy { service, command, image, env, strategy, no_wait } => {
            let mut request = DeployRequest { command, image, strategy, ..DeployRequest::default() };
            for pair in &env {
                match pair.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        request.env.insert(k.to_string(), v.to_string());
                    }
                    _ => {
                        eprintln!("error: --env {pair:?} is not NAME=value");
                        return Ok(ExitCode::from(EXIT_BAD_INPUT));
                    }
                }
            }
            let started = match client.deploy(&service, &request).await {
                Ok(started) => started,
                Err(error) => return refused(error),
            };
            if no_wait {
                println!("{service}: deploy started; follow it with `ebb status` or `ebb events --follow`");
                return Ok(ExitCode::SUCCESS);
            }
            follow_deploy(&client, &service, &started).await
        }
        Command::Certs { action: None, json } => {
            let certs = client.certs().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&certs)?);
            } else {
                print!("{}", render_certs(&certs));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs { action: Some(CertsAction::Renew { domain, timeout }), .. } => {
            match client.answer_within(timeout).renew_certs(domain.as_deref()).await {
                Ok(outcomes) => {
                    for o in outcomes {
                        println!(
                            "listener {}: renewed {} (serial {}, not after {})",
                            o.listener,
                            o.domains.join(", "),
                            o.serial,
                            o.not_after
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => refused(error),
            }
        }
        Command::Certs { action: Some(CertsAction::Reload { listener }), .. } => {
            match client.reload_certs(listener.as_deref()).await {
                Ok(outcomes) => {
                    let mut failed = false;
                    for o in outcomes {
                        match &o.error {
                            None => {
                                let certs: Vec<String> = o
                                    .certificates
                                    .iter()
                                    .map(|c| format!("{} (not after {})", c.names.join(", "), c.not_after))
                                    .collect();
                                println!("listener {}: reloaded: {}", o.listener, certs.join("; "));
                            }
                            Some(error) => {
                                failed = true;
                                println!(
                                    "listener {}: not reloaded: {error}; still serving the previous certificates",
                                    o.listener
                                );
                            }
                        }
                    }
                    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
                }
                Err(error) => refused(error),
            }
        }
        Command::Rollback { service } => {
            let started = match client.rollback(&service, None).await {
                Ok(started) => started,
                Err(error) => return refused(error),
            };
            follow_deploy(&client, &service, &started).await
        }
        Command::Protect { replica, off } => {
            let outcome = client.protect(&replica, !off).await?;
            println!("{replica}: {}", outcome.message);
            Ok(ExitCode::SUCCESS)
        }
        Command::Interrupt { replica, notice } => {
            let outcome = client.interrupt(&replica, notice).await?;
            println!("{replica}: {}", outcome.message);
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Plan { .. }
        | Command::Apply { .. }
        | Command::Logs { .. }
        | Command::DemoApp(_)
        | Command::Proxy(_)
        | Command::Load(_)
        | Command::Simulate(_) => unreachable!("handled above"),
    }
}

/// A deploy or rollback the admin API refused changed nothing: exit 2 (as
/// for other bad input), with its message. Any other failure (ebb not
/// running, no answer) leaves the outcome unknown: exit 1.
/// `ebb certs`: one line per certificate.
fn render_certs(certs: &[crate::wire::CertView]) -> String {
    if certs.is_empty() {
        return "no TLS listener\n".to_string();
    }
    let rows: Vec<[String; 5]> = certs
        .iter()
        .map(|c| {
            let issuer = c.issuer.as_deref().map(short_issuer).unwrap_or_else(|| "-".into());
            let not_after = match (&c.not_after, c.expired) {
                (Some(t), true) => format!("{t} (EXPIRED)"),
                (Some(t), false) => t.clone(),
                (None, _) => "none yet".into(),
            };
            [c.listener.clone(), c.domains.join(","), issuer, not_after, c.source.clone()]
        })
        .collect();
    let header = ["LISTENER", "DOMAINS", "ISSUER", "NOT AFTER", "SOURCE"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 4 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header);
    for (row, c) in rows.iter().zip(certs) {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
        if let Some(renews) = &c.renews_at {
            out.push_str(&format!("    renews from {renews}\n"));
        }
        if let Some(error) = &c.error {
            out.push_str(&format!("    last error: {error}\n"));
        }
    }
    out
}

/// An issuer's CN if it has one (`CN=Pebble Intermediate CA 1f2e3d`), else
/// the whole name.
fn short_issuer(dn: &str) -> String {
    dn.split(", ").find_map(|part| part.strip_prefix("CN=")).unwrap_or(dn).to_string()
}

fn refused(error: ClientError) -> anyhow::Result<ExitCode> {
    match error.refusal() {
        Some(refusal) => {
            eprintln!("error: {}; nothing changed", refusal.message);
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
        None => Err(error.into()),
    }
}

/// Waits for the deploy the admin API answered with (`started`: the
/// service's status once the deploy began) to finish, printing each new
/// progress line; exit 0 when it succeeded, 1 when it rolled back.
async fn follow_deploy(client: &AdminClient, service: &str, started: &ServiceStatus) -> anyhow::Result<ExitCode> {
    let Some(started) = started.deploy.as_ref().or(started.last_deploy.as_ref()) else {
        anyhow::bail!("{service}: the admin API answered without a deploy; see `ebb status {service}`");
    };
    let ours = |d: &DeployStatus| d.from_version == started.from_version && d.to_version == started.to_version;
    let mut last = String::new();
    loop {
        let status = client.service(service).await?;
        let current = status.deploy.as_ref().or(status.last_deploy.as_ref()).filter(|d| ours(d));
        if let Some(deploy) = current {
            if deploy.progress != last {
                println!("{service}: {}", deploy.progress);
                last = deploy.progress.clone();
            }
        }
        // A later deploy (`ebb rollback`, another `ebb deploy`) replaced
        // this one before it was seen to end: its outcome is in the events.
        let newest = status.deploy.as_ref().or(status.last_deploy.as_ref());
        if let Some(later) = newest.filter(|d| d.to_version > started.to_version) {
            println!(
                "{service}: deploy v{} -> v{} was followed by v{} -> v{}; see `ebb events {service}`",
                started.from_version, started.to_version, later.from_version, later.to_version
            );
            return Ok(ExitCode::SUCCESS);
        }
        if status.deploy.is_none() && status.last_deploy.as_ref().is_some_and(ours) {
            return Ok(match status.last_deploy {
                Some(d) if d.rollback_reason.is_some() || d.phase == "rolled_back" => {
                    eprintln!(
                        "{service}: rolled back to v{}: {}",
                        status.version,
                        d.rollback_reason.unwrap_or_else(|| "see `ebb events`".into())
                    );
                    ExitCode::FAILURE
                }
                _ => {
                    println!("{service}: now on v{}", status.version);
                    ExitCode::SUCCESS
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Asks ebb to drain and stop, then waits until it has **exited**: its
/// admin API no longer answers, its state directory's lock is free (a new
/// `ebb up` would start), and its process is gone when it runs here. A
/// closed admin listener alone is not enough: ebb closes it before it has
/// finished.
async fn down(client: &AdminClient, state_dir: Option<&Path>, timeout: Duration) -> anyhow::Result<ExitCode> {
    let pid = match client.shutdown().await {
        Ok(answer) => answer.pid,
        // After a SIGTERM the replicas run on without an ebb: say so.
        Err(ClientError::NotRunning(not_running)) => match state_dir.and_then(crate::state::replica_records) {
            Some(left) if left > 0 => bail!(
                "{not_running}. The last run left {left} replica{} recorded in {}, which may still be running (SIGTERM stops ebb only): `ebb up` adopts them, then `ebb down` stops the fleet",
                if left == 1 { "" } else { "s" },
                state_dir.map(|d| d.join(crate::state::STATE_FILE).display().to_string()).unwrap_or_default()
            ),
            // Nothing runs and nothing was left: the fleet is already down.
            _ => {
                println!("ebb: {not_running}; nothing to stop (the fleet is already down)");
                return Ok(ExitCode::SUCCESS);
            }
        },
        Err(error) => return Err(error.into()),
    };
    println!("ebb: stopping: balancers finish in-flight requests, then replicas drain and stop");
    let started = Instant::now();
    let mut last_count = None;
    let mut api_closed = false;
    loop {
        if !api_closed {
            match client.status().await {
                Ok(status) => {
                    let remaining: usize = status.services.iter().map(|s| s.replicas.len()).sum();
                    if last_count != Some(remaining) {
                        println!("ebb: {remaining} replica{} still running", if remaining == 1 { "" } else { "s" });
                        last_count = Some(remaining);
                    }
                }
                Err(ClientError::NotRunning(_)) => api_closed = true,
                Err(_) => {}
            }
        }
        // A remote ebb: its API closing is all that can be seen from here.
        let gone = match state_dir {
            Some(dir) => !crate::state::state_dir_in_use(dir) && !process_running(pid),
            None => true,
        };
        if api_closed && gone {
            println!("ebb: stopped");
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() > timeout {
            bail!(
                "ebb (pid {pid}) is still stopping after {}; check `ebb status`",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `traffic: offered 250 req/s, served 98 req/s; queued 152 (4 of 4 at their limit of 8), shed 12/s, queue time 480 ms — saturated`
fn demand_line(service: &ServiceStatus) -> Option<String> {
    let d = service.saturation.as_ref()?;
    let mut line = format!("traffic: offered {:.0} req/s, served {:.0} req/s", d.offered_per_s, d.served_per_s);
    if let Some(limit) = d.limit {
        line.push_str(&format!("; queued {} ({} of {} at their limit of {limit})", d.queued, d.at_limit, d.routable));
    }
    if d.shed_per_s > 0 {
        line.push_str(&format!(", shed {}/s", d.shed_per_s));
    }
    if let Some(ms) = d.queue_time_ms.filter(|ms| *ms >= 1.0) {
        line.push_str(&format!(", queue time {ms:.0} ms"));
    }
    if d.saturated {
        line.push_str(" — saturated");
    }
    Some(line)
}

/// Whether `pid` is a live process on this machine (a zombie has exited;
/// no `/proc` entry: gone, or not on this machine).
fn process_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // `pid (comm) S ...`: the state follows the last `)`.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    state.is_some_and(|s| s != 'Z' && s != 'X')
}

fn format_age(seconds: f64) -> String {
    let s = seconds as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The `ebb status` table.
pub fn render_status(status: &FleetStatus) -> String {
    let mut out = String::new();
    for service in &status.services {
        // A service reached only through listeners has no address of its own.
        let via: Vec<&str> = status
            .listeners
            .iter()
            .filter(|l| l.routes.iter().any(|r| r.service == service.name))
            .map(|l| l.name.as_str())
            .collect();
        let front = match (service.listen.ends_with(":0"), via.is_empty()) {
            (true, false) => format!("via listener {}", via.join(", ")),
            // A worker pool: no balancer, no address.
            (true, true) => "worker pool".to_string(),
            (false, _) => format!("http://{}", service.listen),
        };
        out.push_str(&format!(
            "service {}  {front}  driver {}  desired {} (min {}, max {})  in service {}  pending {}  version {}\n",
            service.name,
            service.driver,
            service.desired,
            service.min,
            service.max,
            service.in_service,
            service.pending,
            service.version
        ));
        if let Some(idle) = &service.idle {
            out.push_str(&format!("  {idle}\n"));
        }
        if let Some(pool) = &service.warm_pool {
            out.push_str(&format!("  {pool}\n"));
        }
        if let Some(holding) = &service.holding {
            out.push_str(&format!("  holding: {holding}\n"));
        }
        if let Some(shadow) = &service.shadow {
            let holding = shadow.holding.as_ref().map(|h| format!("; holding: {h}")).unwrap_or_default();
            out.push_str(&format!(
                "  shadow ({}): would run {} (not applied){holding}\n",
                shadow.policies.join(", "),
                shadow.desired
            ));
        }
        for line in &service.predictive {
            out.push_str(&format!("  {line}\n"));
        }
        if let Some(line) = demand_line(service) {
            out.push_str(&format!("  {line}\n"));
        }
        if let Some(host) = service.host.as_ref().filter(|h| h.full) {
            let message = host.message.clone().unwrap_or_else(|| "host full".into());
            out.push_str(&format!(
                "  {message}: more local replicas would not add capacity; CPU readings are contended\n"
            ));
        }
        match (&service.deploy, &service.last_deploy) {
            (Some(deploy), _) => out.push_str(&format!("  deploy: {}\n", deploy.progress)),
            (None, Some(last)) => out.push_str(&format!("  last deploy: {}\n", last.progress)),
            (None, None) => {}
        }
        let header = ["REPLICA", "STATE", "HEALTH", "PID", "PORT", "AGE", "CPU", "IN-FLIGHT", "REQUESTS", "PROTECTED"];
        let rows: Vec<[String; 10]> = service
            .replicas
            .iter()
            .map(|r| {
                [
                    r.id.clone(),
                    // Ejection is a pause in the rotation, not a health
                    // verdict: the HEALTH column still says healthy.
                    match (r.ejected, r.pooled) {
                        (true, _) => "ejected",
                        // Beside the fleet: its state would read as serving.
                        (false, true) => "warm_pool",
                        (false, false) => r.state.as_str(),
                    }
                    .to_string(),
                    r.health.clone(),
                    r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    r.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    format_age(r.age_s),
                    r.cpu.map(|c| format!("{c:.0}%")).unwrap_or_else(|| "-".into()),
                    r.in_flight.to_string(),
                    r.requests.to_string(),
                    if r.protected { "yes" } else { "-" }.to_string(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("  ");
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                // Numbers right-aligned, words left-aligned.
                if i >= 3 {
                    s.push_str(&format!("{cell:>w$}"));
                } else {
                    s.push_str(&format!("{cell:<w$}"));
                }
            }
            s.trim_end().to_string() + "\n"
        };
        out.push_str(&line(&header.map(String::from)));
        for row in &rows {
            out.push_str(&line(row));
        }
        if rows.is_empty() {
            out.push_str("  (no replicas)\n");
        }
        for r in service.replicas.iter().filter(|r| r.ejected) {
            let why = r.ejection.as_deref().unwrap_or("ejected");
            out.push_str(&format!("  {} {why}\n", r.id));
        }
    }
    let now = std::time::SystemTime::now();
    for listener in &status.listeners {
        out.push_str(&render_listener(listener, now));
    }
    out
}

/// A listener: its addresses, certificates and routes.
fn render_listener(l: &crate::wire::ListenerStatus, now: std::time::SystemTime) -> String {
    let scheme = if l.tls { "https" } else { "http" };
    let mut out = format!("listener {}  {scheme}://{}", l.name, l.listen);
    if let Some(http) = &l.http {
        out.push_str(&format!("  (http://{http} redirects to it)"));
    }
    out.push_str(&format!("  tls {}\n", if l.tls { "on" } else { "off" }));
    for cert in &l.certificates {
        out.push_str(&format!(
            "  certificate {}  not after {}{}  ({})\n",
            cert.names.join(", "),
            cert.not_after,
            expiry(&cert.not_after, cert.expired, now),
            cert.file
        ));
    }
    if let Some(error) = &l.tls_error {
        out.push_str(&format!("  certificate reload failed (still serving the previous ones): {error}\n"));
    }
    for (i, route) in l.routes.iter().enumerate() {
        out.push_str(&format!("  route {}  {} -> {}\n", i + 1, route.rule, route.service));
    }
    match l.unrouted {
        0 => {}
        1 => out.push_str("  1 request matched no route (404)\n"),
        n => out.push_str(&format!("  {n} requests matched no route (404)\n")),
    }
    out
}

/// How long a certificate has left, in words: `, in 88 days`; loud under
/// 14 days, when it should have been renewed already (ACME renews at 30).
fn expiry(not_after: &str, expired: bool, now: std::time::SystemTime) -> String {
    const DAY: u64 = 86_400;
    let left = humantime::parse_rfc3339(not_after).ok().and_then(|t| t.duration_since(now).ok());
    match (expired, left) {
        (true, _) | (false, Some(std::time::Duration::ZERO)) => "  EXPIRED".to_string(),
        (false, None) => String::new(),
        (false, Some(left)) => {
            let secs = left.as_secs();
            let words = match secs {
                s if s < 2 * DAY => format!("{} h", s.div_ceil(3600)),
                s => format!("{} days", s / DAY),
            };
            match secs < 14 * DAY {
                true => format!("  EXPIRES SOON, in {words}: renew it"),
                false => format!(", in {words}"),
            }
        }
    }
}

fn render_event(e: &Event) -> String {
    let change = match (e.from, e.to) {
        (Some(from), Some(to)) => format!(" {from}->{to}"),
        _ => String::new(),
    };
    format!(
        "{}  {:<8} {:<20} {}{}  {}",
        e.time,
        e.service,
        e.kind.as_str(),
        e.replica.as_deref().unwrap_or("-"),
        change,
        // Escaped again here: an event kept by an older ebb may hold them.
        crate::events::escape_controls(&e.reason)
    )
}

async fn events(client: &AdminClient, service: Option<&str>, follow: bool, json: bool) -> anyhow::Result<ExitCode> {
    let mut after = 0;
    let mut stdout = std::io::stdout();
    loop {
        let batch = client.events(service, after).await?;
        for event in &batch {
            after = after.max(event.seq);
            let line = if json { serde_json::to_string(event)? } else { render_event(event) };
            writeln!(stdout, "{line}")?;
        }
        stdout.flush()?;
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod follow_tests {
    use super::follow_short_flag;

    fn rewrite(args: &[&str]) -> Vec<String> {
        follow_short_flag(args.iter().map(|a| a.into()).collect())
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn dash_f_after_logs_and_events_is_follow_and_the_file_elsewhere() {
        assert_eq!(rewrite(&["ebb", "logs", "web-1", "-f"]), ["ebb", "logs", "web-1", "--follow"]);
        assert_eq!(
            rewrite(&["ebb", "-f", "x.toml", "logs", "-f", "web-1"]),
            ["ebb", "-f", "x.toml", "logs", "--follow", "web-1"]
        );
        assert_eq!(
            rewrite(&["ebb", "--log-format", "json", "events", "-f"]),
            ["ebb", "--log-format", "json", "events", "--follow"]
        );
        assert_eq!(rewrite(&["ebb", "status", "-f", "x.toml"]), ["ebb", "status", "-f", "x.toml"]);
        assert_eq!(rewrite(&["ebb", "-f", "logs", "status"]), ["ebb", "-f", "logs", "status"], "a file named logs");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{HostStatus, SaturationStatus};

    fn service() -> ServiceStatus {
        serde_json::from_value(serde_json::json!({
            "name": "web", "listen": "127.0.0.1:8080", "driver": "process",
            "desired": 4, "min": 1, "max": 5, "in_service": 4, "pending": 0, "version": 1,
            "holding": "saturated — 152 requests queued, 4 of 4 replicas at their limit of 8",
            "replicas": []
        }))
        .unwrap()
    }

    /// A listener's certificates say how long they have left; its routes
    /// are numbered in order.
    #[test]
    fn status_shows_a_listener_with_its_routes_and_certificate_expiry() {
        let listener: crate::wire::ListenerStatus = serde_json::from_value(serde_json::json!({
            "name": "public", "listen": "0.0.0.0:443", "http": "0.0.0.0:80", "tls": true,
            "certificates": [
                {"names": ["example.com", "*.example.com"], "not_after": "2027-03-01T12:00:00Z", "expired": false, "file": "/etc/ebb/site.pem"},
                {"names": ["api.example.com"], "not_after": "2026-12-10T00:00:00Z", "expired": false, "file": "/etc/ebb/api.pem"},
                {"names": ["old.example.com"], "not_after": "2026-12-02T00:00:00Z", "expired": true, "file": "/etc/ebb/old.pem"},
                {"names": ["soon.example.com"], "not_after": "2026-12-04T00:00:00Z", "expired": false, "file": "/etc/ebb/soon.pem"}
            ],
            "tls_error": null,
            "routes": [{"rule": "host api.example.com", "service": "api"}, {"rule": "default", "service": "web"}],
            "unrouted": 1
        }))
        .unwrap();
        let now = humantime::parse_rfc3339("2026-12-03T14:00:00Z").unwrap();
        let text = render_listener(&listener, now);
        assert_eq!(
            text,
            "listener public  https://0.0.0.0:443  (http://0.0.0.0:80 redirects to it)  tls on
  certificate example.com, *.example.com  not after 2027-03-01T12:00:00Z, in 87 days  (/etc/ebb/site.pem)
  certificate api.example.com  not after 2026-12-10T00:00:00Z  EXPIRES SOON, in 6 days: renew it  (/etc/ebb/api.pem)
  certificate old.example.com  not after 2026-12-02T00:00:00Z  EXPIRED  (/etc/ebb/old.pem)
  certificate soon.example.com  not after 2026-12-04T00:00:00Z  EXPIRES SOON, in 10 h: renew it  (/etc/ebb/soon.pem)
  route 1  host api.example.com -> api
  route 2  default -> web
  1 request matched no route (404)
"
        );
    }

    /// `ebb status` says when a service is idle (scale to zero), on its
    /// own line under the service's.
    #[test]
    fn status_shows_an_idle_service() {
        let mut web = service();
        web.holding = None;
        web.idle = Some("idle (suspended 3 replicas, for 12 min)".into());
        let text = render_status(&FleetStatus { services: vec![web], listeners: Vec::new() });
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("service web"), "{text}");
        assert_eq!(lines[1], "  idle (suspended 3 replicas, for 12 min)", "{text}");
    }

    /// `ebb status` shows what the shadow policies would run, under the
    /// live hold, and says it is not applied.
    #[test]
    fn status_shows_the_shadow_policies() {
        let mut web = service();
        web.shadow = Some(crate::wire::ShadowStatus {
            policies: vec!["cpu-60".into()],
            desired: 5,
            holding: Some("scale-out cooldown of cpu-60, 40 s left".into()),
        });
        let text = render_status(&FleetStatus { services: vec![web], listeners: Vec::new() });
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("  holding: saturated"), "{text}");
        assert_eq!(
            lines[2], "  shadow (cpu-60): would run 5 (not applied); holding: scale-out cooldown of cpu-60, 40 s left",
            "{text}"
        );
    }

    /// `ebb status` shows what each predictive policy's forecast asks for.
    #[test]
    fn status_shows_the_predictive_policies() {
        let mut web = service();
        web.predictive = vec!["predictive daily: 5 h of history, needs 24 h to forecast".into()];
        let text = render_status(&FleetStatus { services: vec![web], listeners: Vec::new() });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], "  predictive daily: 5 h of history, needs 24 h to forecast", "{text}");
    }

    /// `ebb status` shows what the balancer sees and a full host, beside
    /// the hold they explain.
    #[test]
    fn status_shows_the_traffic_line_and_a_full_host() {
        let mut web = service();
        web.saturation = Some(SaturationStatus {
            offered_per_s: 412.0,
            served_per_s: 98.0,
            queued: 152,
            shed_per_s: 12,
            in_flight: 32,
            routable: 4,
            at_limit: 4,
            limit: Some(8),
            queue_time_ms: Some(480.4),
            saturated: true,
        });
        web.host = Some(HostStatus {
            cpus: 2.0,
            busy_cpus: 1.98,
            pressure: Some(0.46),
            full: true,
            message: Some("host full: 2.0 of 2 CPUs busy (CPU pressure 46%)".into()),
        });
        let text = render_status(&FleetStatus { services: vec![web], listeners: Vec::new() });
        assert!(
            text.contains("  holding: saturated — 152 requests queued, 4 of 4 replicas at their limit of 8\n"),
            "{text}"
        );
        assert!(
            text.contains("  traffic: offered 412 req/s, served 98 req/s; queued 152 (4 of 4 at their limit of 8), shed 12/s, queue time 480 ms — saturated\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  host full: 2.0 of 2 CPUs busy (CPU pressure 46%): more local replicas would not add capacity"
            ),
            "{text}"
        );

        let mut calm = service();
        calm.holding = None;
        calm.saturation = Some(SaturationStatus { offered_per_s: 5.0, served_per_s: 5.0, ..Default::default() });
        let text = render_status(&FleetStatus { services: vec![calm], listeners: Vec::new() });
        assert!(text.contains("  traffic: offered 5 req/s, served 5 req/s\n"), "{text}");
        assert!(!text.contains("host full"), "{text}");
    }
}
