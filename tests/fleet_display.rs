//! What `pv2hvm fleet run` shows: on a terminal (a tmux pane, read back with capture-pane while
//! the run goes on), a line per active source with its stage, blocks and rate under an overall
//! bar, and a line per finished source; off a terminal, plain lines, one per stage change.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::moto::Moto;
use common::*;

/// The sources' lines of one screen: (source, stage) for each line "i-… STAGE N fetched …".
fn active(screen: &str, ids: &[String]) -> Vec<(String, String)> {
    screen
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().skip_while(|w| !w.starts_with("i-"));
            let (id, stage) = (w.next()?, w.next()?);
            let rest: Vec<&str> = w.collect();
            (ids.iter().any(|i| i == id) && rest.get(1) == Some(&"fetched") && rest.last() == Some(&"blocks/s"))
                .then(|| (id.to_string(), stage.to_string()))
        })
        .collect()
}

fn tmux(socket: &Path, args: &[&str]) -> String {
    let out = Command::new("tmux").arg("-S").arg(socket).args(args).output().expect("tmux (scripts/test installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_terminal_shows_a_line_per_active_source_under_an_overall_bar_and_plain_lines_otherwise() {
    // Registration is slowed so that two sources are seen active at once, each in its stage.
    let m = Moto::start_with(&[("PV2HVM_MOTO_REGISTER_DELAY", "3")]);
    let dir = tempfile::tempdir().unwrap();
    let v = m.tool_json(&["fleet-seed", fixture_cloud().to_str().unwrap(), "3"]);
    let ids: Vec<String> = v["instances"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().into()).collect();
    let ids_file = dir.path().join("ids");
    std::fs::write(&ids_file, ids.join("\n") + "\n").unwrap();

    // The run in a pane of 160 columns: its environment and exit status through a script.
    let mut env = String::new();
    let mut probe = Command::new("true");
    m.env(&mut probe);
    for (k, v) in probe.get_envs() {
        if let (k, Some(v)) = (k.to_string_lossy(), v) {
            env += &format!("export {k}='{}'\n", v.to_string_lossy());
        }
    }
    let script = dir.path().join("run.sh");
    let status = dir.path().join("status");
    std::fs::write(
        &script,
        format!(
            "{env}cd '{d}'\n'{bin}' fleet run --yes --concurrency 2 --ids-file '{ids}' --journal '{d}/fleet.db' \
             --work-dir '{d}'\necho $? > '{status}'\nsleep 600\n",
            d = dir.path().display(),
            bin = env!("CARGO_BIN_EXE_pv2hvm"),
            ids = ids_file.display(),
            status = status.display(),
        ),
    )
    .unwrap();
    let socket = dir.path().join("tmux.sock");
    let s = script.display().to_string();
    tmux(&socket, &["new-session", "-d", "-s", "fleet", "-x", "160", "-y", "40", "bash", &s]);
    struct Kill<'a>(&'a Path);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            tmux(self.0, &["kill-server"]);
        }
    }
    let _kill = Kill(&socket);

    let started = Instant::now();
    let (mut two_at_once, mut stages, mut bar) = (None, std::collections::BTreeSet::new(), false);
    let mut screen = String::new();
    while !status.exists() {
        assert!(started.elapsed() < Duration::from_secs(400), "the run did not end: {screen}");
        screen = tmux(&socket, &["capture-pane", "-p", "-t", "fleet"]);
        let lines = active(&screen, &ids);
        stages.extend(lines.iter().map(|(_, s)| s.clone()));
        // The overall bar is the last of the live lines, below the sources' lines.
        let bar_at = screen.lines().position(|l| l.starts_with("fleet [") && l.contains("/3 sources"));
        bar |= bar_at.is_some();
        if lines.len() == 2 && two_at_once.is_none() {
            let rows: Vec<&str> = screen.lines().collect();
            let last_source = rows.iter().rposition(|l| lines.iter().any(|(id, _)| l.contains(id.as_str()))).unwrap();
            assert!(bar_at.is_some_and(|b| b > last_source), "the bar under the sources' lines:\n{screen}");
            two_at_once = Some(screen.clone());
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    screen = tmux(&socket, &["capture-pane", "-p", "-t", "fleet"]);
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "0", "{screen}");
    assert!(bar, "no overall bar was seen");
    assert!(two_at_once.is_some(), "never two sources on screen at once (concurrency 2); last screen:\n{screen}");
    // Stages moved on the sources' lines while they ran (the names pv2hvm's stages have).
    assert!(stages.len() >= 2 && stages.iter().all(|s| STAGES.contains(&s.as_str())), "{stages:?}");
    // At the end: no active line is left, one "migrated" line per source, and the bar is full.
    assert!(active(&screen, &ids).is_empty(), "{screen}");
    for id in &ids {
        assert!(
            screen.lines().any(|l| l.starts_with(&format!("{id}: migrated ami-"))),
            "no finished line for {id}:\n{screen}"
        );
    }
    assert!(screen.lines().any(|l| l.starts_with("fleet [") && l.contains("3/3 sources")), "{screen}");

    // Off a terminal (stderr a pipe): one plain line per stage change, no bar. The sources are
    // done, so a new journal's run finds their AMIs and says so, one line each.
    let out = run_ok(
        m.pv2hvm()
            .args(["fleet", "run", "--yes", "--concurrency", "2", "--ids-file"])
            .arg(&ids_file)
            .arg("--journal")
            .arg(dir.path().join("plain.db"))
            .arg("--work-dir")
            .arg(dir.path()),
    );
    let err = stderr(&out);
    assert!(!err.contains("fleet [") && !err.contains('\r') && !err.contains('\u{1b}'), "{err}");
    for id in &ids {
        assert!(err.lines().any(|l| l == format!("{id}: started (us-east-1)")), "{err}");
        assert!(err.lines().any(|l| l.starts_with(&format!("{id}: already-migrated ami-"))), "{err}");
    }
}

/// The stage names a source's line can show.
const STAGES: &[&str] = &["starting", "snapshot", "read", "convert", "upload", "register", "copy", "launch", "cleanup"];
