//! `ebb plan` and `ebb apply`: the config file against the running ebb.
//!
//! Exit codes follow `terraform plan -detailed-exitcode`: `ebb plan` exits
//! 0 when there is nothing to change, 2 when there are changes, 1 on an
//! error (a config error, a change that needs a restart, ebb not running).
//! `ebb apply` exits 0 when everything applied (and every deploy it
//! started succeeded), 1 otherwise.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ebb_core::config::Config;

use crate::client::{AdminClient, AdminTarget};
use crate::wire::PlanAnswer;

/// How long `ebb apply` waits for the running ebb to answer (new routed
/// services are waited for before their routes switch, up to a minute).
const APPLY_ANSWER: Duration = Duration::from_secs(120);
/// How long `ebb apply` follows removed services while they drain.
const FOLLOW_DRAINS: Duration = Duration::from_secs(300);

/// What both commands start with: the file, read and checked here first
/// (its errors point into it), the client of the ebb it names, and that
/// ebb's plan for it.
struct Planned {
    path: String,
    text: String,
    client: AdminClient,
    plan: PlanAnswer,
}

async fn planned(file: &Path, target: &AdminTarget) -> Result<Planned, ExitCode> {
    let text = crate::config_file::read(file).map_err(|e| {
        eprintln!("{e}");
        ExitCode::FAILURE
    })?;
    let config = Config::parse(&text, file).map_err(|e| {
        eprintln!("{e}");
        ExitCode::FAILURE
    })?;
    let path = file.canonicalize().unwrap_or_else(|_| file.to_path_buf()).display().to_string();
    let client = target.client(Some(&config)).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })?;
    let plan = client.plan(&path, &text).await.map_err(|error| {
        match error.refusal() {
            Some(refusal) => eprintln!("{}", refusal.message),
            None => eprintln!("error: {error}"),
        }
        ExitCode::FAILURE
    })?;
    Ok(Planned { path, text, client, plan })
}

fn print_plan(plan: &PlanAnswer, file: &Path) {
    if plan.changes.is_empty() {
        println!("No changes: the running ebb already runs what {} says.", file.display());
        return;
    }
    for change in &plan.changes {
        println!("{}", change.text);
    }
    let count = plan.changes.len();
    println!(
        "Plan: {count} change{} to the running ebb (applied from {}).",
        if count == 1 { "" } else { "s" },
        plan.applied_from
    );
    if plan.refused {
        eprintln!("error: some changes cannot be applied to a running ebb (see above); nothing would be applied");
    }
}

/// `ebb plan [--json]`.
pub(super) async fn plan(file: &Path, target: &AdminTarget, json: bool) -> anyhow::Result<ExitCode> {
    let plan = match planned(file, target).await {
        Ok(planned) => planned.plan,
        Err(code) => return Ok(code),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print_plan(&plan, file);
    }
    Ok(match (plan.refused, plan.changes.is_empty()) {
        (true, _) => ExitCode::FAILURE,
        (false, true) => ExitCode::SUCCESS,
        (false, false) => ExitCode::from(2),
    })
}

/// `ebb apply [--yes]`.
pub(super) async fn apply(file: &Path, target: &AdminTarget, yes: bool) -> anyhow::Result<ExitCode> {
    let Planned { path, text, client, plan } = match planned(file, target).await {
        Ok(planned) => planned,
        Err(code) => return Ok(code),
    };
    print_plan(&plan, file);
    if plan.refused {
        return Ok(ExitCode::FAILURE);
    }
    if plan.changes.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    if !yes && std::io::stdin().is_terminal() && !confirmed()? {
        println!("Nothing applied.");
        return Ok(ExitCode::FAILURE);
    }
    let applied = match client.clone().answer_within(APPLY_ANSWER).apply(&path, &text).await {
        Ok(applied) => applied,
        Err(error) => {
            match error.refusal() {
                Some(refusal) => eprintln!("error: {}", refusal.message),
                None => eprintln!("error: {error}"),
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    for step in &applied.steps {
        println!("{step}");
    }
    let mut code = ExitCode::SUCCESS;
    for service in &applied.deploying {
        let started = client.service(service).await?;
        if super::follow_deploy(&client, service, &started).await? != ExitCode::SUCCESS {
            code = ExitCode::FAILURE;
        }
    }
    follow_drains(&client, &applied.draining).await?;
    println!("Applied.");
    Ok(code)
}

/// Asks on the terminal; only `y` or `yes` goes ahead.
fn confirmed() -> anyhow::Result<bool> {
    print!("Apply these changes to the running ebb? Only 'yes' applies: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "yes"))
}

/// Prints each removed service's replicas as they drain, until it is gone.
async fn follow_drains(client: &AdminClient, draining: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + FOLLOW_DRAINS;
    let mut last = std::collections::BTreeMap::new();
    loop {
        let status = client.status().await?;
        let left: Vec<(&str, usize)> = status
            .services
            .iter()
            .filter(|s| draining.contains(&s.name))
            .map(|s| (s.name.as_str(), s.replicas.len()))
            .collect();
        for name in draining {
            let now = left.iter().find(|(n, _)| n == name).map(|(_, count)| *count);
            if last.get(name) != Some(&now) {
                match now {
                    Some(count) => {
                        println!("- service {name}: {count} replica{} left", if count == 1 { "" } else { "s" })
                    }
                    None => println!("- service {name}: drained and stopped"),
                }
                last.insert(name.clone(), now);
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            println!("still draining; follow with `ebb status`");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
