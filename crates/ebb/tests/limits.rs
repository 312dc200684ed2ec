//! Limits that hold for local processes: each replica in a control group
//! of its own (cpu quota, memory limit), an OOM kill reported as such, and
//! a process that leaves its replica's process group still stopped.
//!
//! Needs writable cgroups (root on this machine kind); elsewhere it prints
//! a SKIP line.

mod support;

use std::time::Duration;

use support::{fast_config, pid_alive, wait_for, Ebb};

fn cgroups_usable() -> bool {
    let usable = nix::unistd::Uid::effective().is_root()
        && (std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists()
            || std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok_and(|c| c.contains("memory")));
    if !usable {
        eprintln!("SKIP: limits tests need root and a cgroup memory controller");
    }
    usable
}

#[test]
fn a_replica_over_its_memory_limit_is_killed_and_the_event_says_so() {
    if !cgroups_usable() {
        return;
    }
    // Allocates (and touches) 1 MiB at a time, far past 48 MiB.
    let hog = r#"python3 -c 'import time
b = []
for _ in range(400):
    b.append(bytearray(1 << 20)); time.sleep(0.002)
time.sleep(60)'"#;
    let ebb = Ebb::start(|admin, listen| {
        fast_config(admin, listen, "{ min = 1, max = 1, desired = 1 }", "memory = \"48MiB\"\ncpu = 0.5")
            .replace("command = \"{ebb} demo-app --port $PORT\"", &format!("command = '''{hog}'''"))
            // It never listens: no health verdict before the kernel's.
            .replace("grace_period = \"0s\"", "grace_period = \"60s\"")
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let event = loop {
        let events = ebb.events();
        if let Some(e) = events.iter().find(|e| e["reason"].as_str().is_some_and(|m| m.contains("out of memory"))) {
            break e.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no out-of-memory event in {events:#?}\n{}", ebb.up_log());
        std::thread::sleep(Duration::from_millis(200));
    };
    let message = event["reason"].as_str().unwrap();
    assert!(message.contains("killed: out of memory, limit 48 MiB"), "{message}");
    assert_eq!(event["kind"], "replica_exited", "{event}");
}

#[test]
fn a_process_that_leaves_its_process_group_is_still_stopped() {
    if !cgroups_usable() {
        return;
    }
    // The replica starts a child in a session of its own (as a daemonising
    // script would), which no signal to the replica's group reaches.
    let command = r#"sh -c 'setsid sh -c "echo \$\$ > $EBB_STATE_DIR/escaped-$EBB_REPLICA_ID.pid; exec sleep 300" & exec {ebb} demo-app --port $PORT'"#;
    let mut ebb = Ebb::start(|admin, listen| {
        fast_config(admin, listen, "{ min = 1, max = 1, desired = 1 }", "cpu = 0.5\ncpu_quota = true")
            .replace("command = \"{ebb} demo-app --port $PORT\"", &format!("command = '''{command}'''"))
    });
    let replica = ebb.wait_in_service(1, Duration::from_secs(30)).remove(0);
    let id = replica["id"].as_str().unwrap().to_string();
    let pid_file = ebb.dir.path().join("state").join(format!("escaped-{id}.pid"));
    let escaped: i32 = wait_for("the escaped child's pid", Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(escaped))).unwrap().as_raw();
    assert_ne!(pgid as u64, replica["pid"].as_u64().unwrap(), "the child left the replica's process group");
    assert!(pid_alive(escaped as u32));
    // cpu_quota = true: half a core, as a quota per 10 ms period.
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", replica["pid"])).unwrap();
    if let Some(path) = cgroups.lines().find_map(|l| l.split_once(":cpu:").map(|(_, p)| p.to_string())) {
        let quota = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu{path}/cpu.cfs_quota_us")).unwrap();
        let period = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu{path}/cpu.cfs_period_us")).unwrap();
        assert_eq!((quota.trim(), period.trim()), ("5000", "10000"), "{cgroups}");
    }

    // Its CPU is the whole tree's, read from the group (a reading exists).
    let out = ebb.cli(&["down"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ebb.wait_exit(Duration::from_secs(30)).is_some());
    wait_for("the escaped child to be gone", Duration::from_secs(10), || (!pid_alive(escaped as u32)).then_some(()));
}
