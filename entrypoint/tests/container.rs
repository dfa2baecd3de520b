//! `entrypoint container`, the process runtime's way to start a container:
//! exit codes as a shell gives them, and, as root, the namespaces and
//! mounts the spec asks for (a read-only bind, a PID namespace of its own).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_entrypoint");

fn container(spec: &str, command: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["container", spec, "--"])
        .args(command)
        .output()
        .expect("run entrypoint")
}

#[test]
fn it_exits_as_its_command_did_or_as_a_shell_would() {
    assert_eq!(
        container("{}", &["sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    let missing = container("{}", &["no-such-command-here"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-command-here: not found"));
    let bad = container("{not json", &["true"]);
    assert_eq!(bad.status.code(), Some(245));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad spec"));
}

#[test]
fn as_root_the_command_gets_its_namespaces_and_mounts() {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to this process's effective user.
    if !std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        eprintln!("not root: no namespaces to test");
        return;
    }
    let host = std::env::temp_dir().join(format!("ep-container-{}", std::process::id()));
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("f"), "from the host\n").unwrap();
    let spec = format!(
        r#"{{"namespace":{{"tmpfs":["/workspace"],"mounts":[{{"host":"{}","path":"/workspace/src","readOnly":true}}],"workingDir":"/workspace/src"}}}}"#,
        host.display()
    );
    let out = container(
        &spec,
        &[
            "sh",
            "-c",
            "echo pid $$; pwd; cat f; ls /proc | grep -c '^[0-9]'; touch x 2>/dev/null || echo read-only; exit 3",
        ],
    );
    let _ = std::fs::remove_dir_all(&host);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "pid 1");
    assert_eq!(lines[1], "/workspace/src");
    assert_eq!(lines[2], "from the host");
    // Its own /proc shows only the namespace's processes (sh, ls, grep).
    assert!(lines[3].parse::<u32>().unwrap() <= 4, "{stdout}");
    assert_eq!(lines[4], "read-only");
    // Nothing was mounted on the host.
    assert!(!std::path::Path::new("/workspace/src/f").exists());
}
