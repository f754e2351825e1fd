//! The HTML reports as a person sees them: pages written by `repsim run` and `repsim suite` with
//! `--report`, opened in headless Chromium. The DOM Chromium builds (after the page's script ran)
//! must have a lane per site, the role bands, the violation marker and the replay command; a
//! screenshot must not be blank. Needs Chromium (`apt-get install chromium`; `.ci/run` installs
//! it when missing). Built only with `--cfg madsim` (`cargo sim-test`).
#![cfg(madsim)]

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::ALWAYS_FAILS;

/// Exit code, and stdout followed by stderr.
fn repsim(dir: &Path, args: &[&str]) -> (i32, String) {
    let (code, stdout, stderr) = common::run(dir, args);
    (code, stdout + &stderr)
}

/// The Chromium binary, which the test needs.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output() {
            if out.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            }
        }
    }
    panic!("these tests open the reports in Chromium: apt-get install chromium (.ci/run does)");
}

fn headless(page: &Path, extra: &[&str]) -> std::process::Output {
    let url = format!(
        "file://{}",
        page.canonicalize().expect("the page exists").display()
    );
    // A profile of its own: two browsers on one profile refuse to start.
    let profile = tempfile::tempdir().expect("temp dir");
    let profile = format!("--user-data-dir={}", profile.path().display());
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            &profile,
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs")
}

/// The DOM of `page` after its script ran.
fn dom_of(page: &Path) -> String {
    let out = headless(page, &["--dump-dom", "--virtual-time-budget=2000"]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("</html>"),
        "chromium gave no DOM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// A screenshot of `page`: its width, height and how many distinct colours it has.
fn screenshot(page: &Path, png: &Path) -> (u32, u32, usize) {
    let shot = format!("--screenshot={}", png.display());
    let out = headless(page, &[&shot, "--window-size=1300,1000"]);
    let file = std::fs::File::open(png).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let bytes = &buf[..info.buffer_size()];
    let step = info.color_type.samples();
    let mut colours: Vec<&[u8]> = bytes.chunks(step).collect();
    colours.sort_unstable();
    colours.dedup();
    (info.width, info.height, colours.len())
}

#[test]
fn a_run_page_shows_every_site_its_roles_and_how_to_replay_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, out) = repsim(
        dir.path(),
        &[
            "run",
            "master-crash-failover",
            "--seed",
            "3",
            "--report",
            "out",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let page = dir.path().join("out/master-crash-failover-seed-3.html");
    let dom = dom_of(&page);
    for lane in ["A", "B", "C"] {
        assert!(
            dom.contains(&format!(r#"<g class="lane" data-lane="{lane}">"#)),
            "no lane for {lane}"
        );
    }
    assert!(dom.contains(r#"class="band master""#), "a master band");
    assert!(dom.contains(r#"class="mark crash""#), "the crash is marked");
    assert!(dom.contains(r#"class="cut""#), "the partition is shaded");
    assert!(dom.contains(r#"class="write ok""#), "the writes are drawn");
    assert!(dom.contains("cargo sim run master-crash-failover --seed 3"));
    // The page's script ran (it fills in the range shown) without stopping on an error.
    assert!(dom.contains("showing 0.000 s to"), "the script did not run");
    let index = std::fs::read_to_string(dir.path().join("out/index.html")).unwrap();
    assert!(index.contains(r#"href="master-crash-failover-seed-3.html""#));
    let size = std::fs::metadata(&page).unwrap().len();
    assert!(size < 2_000_000, "{size} bytes");
    let (w, h, colours) = screenshot(&page, &dir.path().join("run.png"));
    assert!(w >= 1000 && h >= 800, "{w}x{h}");
    assert!(colours > 20, "a blank screenshot ({colours} colours)");
}

#[test]
fn a_failing_run_page_pins_its_violation_and_a_suite_page_links_its_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("fails.toml"), ALWAYS_FAILS).expect("scenario");
    let (code, out) = repsim(
        dir.path(),
        &["run", "fails.toml", "--seed", "2", "--report", "failed"],
    );
    assert_eq!(code, 1, "{out}");
    let dom = dom_of(&dir.path().join("failed/fails-seed-2.html"));
    assert!(
        dom.contains(r#"class="violation""#),
        "the violation is pinned"
    );
    assert!(dom.contains(r#"id="violation-0""#), "and listed");
    assert!(dom.contains("expectation"), "with its invariant");
    assert!(dom.contains("cargo sim replay failures/fails-seed-2.json"));
    let (_, _, colours) = screenshot(
        &dir.path().join("failed/fails-seed-2.html"),
        &dir.path().join("failed.png"),
    );
    assert!(colours > 20, "a blank screenshot ({colours} colours)");

    let (code, out) = repsim(dir.path(), &["suite", "--seeds", "4", "--report", "suite"]);
    assert_eq!(code, 0, "{out}");
    let dom = dom_of(&dir.path().join("suite/index.html"));
    let catalog = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/catalog"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count();
    assert_eq!(
        dom.matches(r#"<td class="pass""#).count(),
        4 * catalog,
        "a cell per scenario and seed"
    );
    assert!(dom.contains("<h2>Coverage</h2>"), "the coverage table");
}
