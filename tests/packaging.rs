//! The systemd unit is one systemd accepts, and the shipped scripts parse.

use std::path::Path;
use std::process::Command;

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let unit = std::fs::read_to_string(repo("packaging/colorgate.service")).unwrap();
    // The unit names the installed binary; verify checks it is executable.
    let unit = unit.replace("/usr/local/bin/colorgate", env!("CARGO_BIN_EXE_colorgate"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("colorgate.service");
    std::fs::write(&path, unit).unwrap();

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package; .ci/deps installs it)");

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("colorgate.service:"), "{stderr}");
}

#[test]
fn the_unit_reloads_with_sighup_and_runs_unprivileged() {
    let unit = std::fs::read_to_string(repo("packaging/colorgate.service")).unwrap();
    for line in [
        "User=colorgate",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStartPre=/usr/local/bin/colorgate check -c /etc/colorgate/colorgate.yaml",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line:?}");
    }
    let logrotate = std::fs::read_to_string(repo("packaging/colorgate.logrotate")).unwrap();
    assert!(logrotate.contains("--signal=USR1"));
}

#[test]
fn shipped_shell_scripts_parse() {
    for script in [
        "packaging/install.sh",
        "packaging/colorgate-upgrade",
        "packaging/build-pgo",
        ".ci/run",
        ".ci/deps",
    ] {
        let out = Command::new("bash")
            .arg("-n")
            .arg(repo(script))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
