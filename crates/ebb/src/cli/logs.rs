//! `ebb logs TARGET`: a replica's output, or every replica of a service
//! (each line prefixed with its replica), the last `--tail` lines, and
//! `--follow` as they are written.

use std::io::{BufRead, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ebb_core::config::Config;

/// The log files of `target`: the replica of that id, or every replica
/// of the service of that name (`<service>-<6 hex>.log`), oldest first.
fn files(config: &Config, target: &str) -> Vec<(String, PathBuf)> {
    let dir = config.state_dir.join("logs");
    let exact = dir.join(format!("{target}.log"));
    if !config.services.contains_key(target) && exact.exists() {
        return vec![(target.to_string(), exact)];
    }
    let mut found: Vec<(std::time::SystemTime, String, PathBuf)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let id = name.strip_suffix(".log")?.to_string();
                    let suffix = id.strip_prefix(target)?.strip_prefix('-')?;
                    let replica_of_target = suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_hexdigit());
                    let modified = e.metadata().and_then(|m| m.modified()).ok()?;
                    replica_of_target.then(|| (modified, id, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().map(|(_, id, path)| (id, path)).collect()
}

/// The last `n` lines of a file (all with `None`), and where they end.
fn tail(path: &Path, n: Option<usize>) -> std::io::Result<(Vec<String>, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let skip = n.map_or(0, |n| lines.len().saturating_sub(n));
    Ok((lines.into_iter().skip(skip).collect(), file.stream_position()?))
}

pub(super) async fn logs(
    config: &Config,
    target: &str,
    tail_lines: Option<usize>,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let valid = !target.is_empty() && target.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        eprintln!("error: {target:?} is not a replica id or a service name (see `ebb status`)");
        return Ok(ExitCode::from(super::EXIT_BAD_INPUT));
    }
    let service = config.services.contains_key(target);
    let mut sources = files(config, target);
    if sources.is_empty() {
        match service {
            true => eprintln!("error: no replica of service {target} has written a log yet (in {})", config.state_dir.join("logs").display()),
            false => eprintln!("error: no log for replica {target} at {}: no such file (see `ebb status` for replica ids and services)", config.state_dir.join("logs").join(format!("{target}.log")).display()),
        }
        return Ok(ExitCode::FAILURE);
    }
    let prefix = |id: &str| if service { format!("{id} | ") } else { String::new() };
    let emit = |out: &mut std::io::Stdout, id: &str, line: &str| -> std::io::Result<()> {
        match json {
            true => writeln!(out, "{}", serde_json::json!({ "replica": id, "line": line })),
            false => writeln!(out, "{}{line}", prefix(id)),
        }
    };
    let mut out = std::io::stdout();
    let mut offsets = Vec::new();
    for (id, path) in &sources {
        let (lines, end) = tail(path, tail_lines)?;
        for line in lines {
            emit(&mut out, id, &line)?;
        }
        offsets.push(end);
    }
    out.flush()?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    // New lines as they come, each file read from where it was; replicas
    // started meanwhile join.
    let mut partial: Vec<String> = vec![String::new(); sources.len()];
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if service {
            for (id, path) in files(config, target) {
                if !sources.iter().any(|(known, _)| *known == id) {
                    sources.push((id, path));
                    offsets.push(0);
                    partial.push(String::new());
                }
            }
        }
        for (i, (id, path)) in sources.iter().enumerate() {
            let Ok(mut file) = std::fs::File::open(path) else { continue };
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offsets[i] {
                offsets[i] = 0; // truncated or rotated: from the start
            }
            if file.seek(std::io::SeekFrom::Start(offsets[i])).is_err() {
                continue;
            }
            let mut reader = std::io::BufReader::new(file);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                offsets[i] += line.len() as u64;
                if line.ends_with('\n') {
                    emit(&mut out, id, &format!("{}{}", partial[i], line.trim_end_matches('\n')))?;
                    partial[i].clear();
                } else {
                    partial[i].push_str(&line);
                }
                line.clear();
            }
        }
        out.flush()?;
    }
}
