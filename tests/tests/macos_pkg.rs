//! The macOS installer, as far as it can be tried without a Mac: what
//! `installer/macos/build-pkg.sh` stages (the LaunchDaemon plist, the app's
//! Info.plist, the component plist, Distribution.xml, the payload tree and
//! the darwin binaries it is given), checked with Python's plistlib against
//! the names the rest of Warren uses; the pkg scripts linted with `sh -n`
//! and shellcheck; and the preinstall, postinstall and uninstall scripts
//! run, under dash and bash, against a scratch volume with mock
//! `launchctl`, `dseditgroup`, `stat`, `id`, `chown` and `pkgutil` that
//! record their calls and keep the daemon's, group's and receipt's state.
//! Not tried here: pkgbuild/productbuild, Installer itself, the real
//! launchd and Directory Services.

use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LABEL: &str = "dev.warren.warrend";
const PLIST_PATH: &str = "Library/LaunchDaemons/dev.warren.warrend.plist";
const HELPER_PATH: &str = "Library/PrivilegedHelperTools/warrend";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs build-pkg.sh into `stage` with `bin_dir` as WARREN_MACOS_BIN_DIR
/// (or none, and a target dir without darwin builds).
fn build_pkg(scratch: &Path, stage: &Path, bin_dir: Option<&Path>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("installer/macos/build-pkg.sh"))
        .arg(stage)
        .env("CARGO_TARGET_DIR", scratch.join("no-target"))
        .env_remove("WARREN_MACOS_BIN_DIR");
    if let Some(dir) = bin_dir {
        cmd.env("WARREN_MACOS_BIN_DIR", dir);
    }
    cmd.output().expect("bash runs")
}

/// A stage without binaries, as on this machine; the script must succeed.
fn staged(scratch: &Path) -> PathBuf {
    let stage = scratch.join("stage");
    let out = build_pkg(scratch, &stage, None);
    assert!(out.status.success(), "build-pkg.sh failed: {}", text(&out));
    stage
}

/// A plist as JSON, parsed by Python's plistlib (what the facts note
/// recommends where plutil is missing).
fn plist(path: &Path) -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, plistlib, sys\nwith open(sys.argv[1], 'rb') as f: print(json.dumps(plistlib.load(f)))",
        ])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{} is not a valid plist: {}",
        path.display(),
        text(&out)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// The label named in a `system/<label>` launchctl target in `hint`.
fn label_in(hint: &str) -> String {
    let start = hint
        .find("system/")
        .expect("the hint names a launchctl target")
        + 7;
    hint[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect()
}

/// The value of `pub const NAME: &str = "..."` in macos.rs (the file is
/// compiled only for macOS, so its text is what can be read here).
fn macos_const(name: &str) -> String {
    let src = fs::read_to_string(repo().join("crates/warren-ipc/src/platform/macos.rs"))
        .expect("macos.rs is readable");
    let at = src
        .find(&format!("pub const {name}: &str ="))
        .unwrap_or_else(|| panic!("macos.rs defines {name}"));
    let rest = &src[at..];
    let open = rest.find('"').expect("a string literal") + 1;
    let close = rest[open..].find('"').expect("a closed literal") + open;
    rest[open..close].to_string()
}

fn tauri_conf() -> Value {
    serde_json::from_str(
        &fs::read_to_string(repo().join("src-tauri/tauri.conf.json")).expect("tauri.conf.json"),
    )
    .expect("tauri.conf.json is JSON")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn staging_without_darwin_binaries_succeeds_and_says_how_to_finish_on_a_mac() {
    let scratch = tempfile::tempdir().unwrap();
    let stage = scratch.path().join("stage");
    let out = build_pkg(scratch.path(), &stage, None);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("needs Apple's SDK"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "pkgbuild --root {} --component-plist {} --scripts {} --identifier dev.warren.pkg",
            stage.join("root").display(),
            stage.join("components.plist").display(),
            stage.join("scripts").display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "productbuild --distribution {}",
            stage.join("Distribution.xml").display()
        )),
        "{stdout}"
    );
    let root = stage.join("root");
    for file in [
        PLIST_PATH,
        "Applications/Warren.app/Contents/Info.plist",
        "Applications/Warren.app/Contents/PkgInfo",
        "Library/Application Support/Warren/uninstall.sh",
        "private/etc/newsyslog.d/dev.warren.warrend.conf",
    ] {
        assert!(root.join(file).is_file(), "{file} is not staged");
    }
    // No binaries were given, so none may appear (not even empty files
    // that pkgbuild would happily package).
    assert!(!root.join(HELPER_PATH).exists());
    assert!(!root.join("usr/local/bin/warren").exists());
    assert!(!root
        .join("Applications/Warren.app/Contents/MacOS/warren-desktop")
        .exists());
    assert_eq!(mode(&root.join("Library/PrivilegedHelperTools")), 0o1755);
    assert_eq!(mode(&stage.join("scripts/postinstall")) & 0o111, 0o111);
    assert_eq!(mode(&stage.join("scripts/preinstall")) & 0o111, 0o111);

    // Staging again over its own stage is fine; over anything else it is refused.
    let again = build_pkg(scratch.path(), &stage, None);
    assert!(again.status.success(), "{}", text(&again));
    let other = scratch.path().join("precious");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("keep.txt"), "mine").unwrap();
    let refused = build_pkg(scratch.path(), &other, None);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert_eq!(fs::read_to_string(other.join("keep.txt")).unwrap(), "mine");
}

#[test]
fn the_launch_daemon_runs_the_staged_helper_as_root_at_boot_and_keeps_it_alive() {
    let scratch = tempfile::tempdir().unwrap();
    let stage = staged(scratch.path());
    let root = stage.join("root");
    let daemon = plist(&root.join(PLIST_PATH));

    // The label is the one the app and CLI tell people to kickstart.
    let start_label = label_in(&macos_const("START_HINT"));
    let stop_label = label_in(&macos_const("STOP_HINT"));
    assert_eq!(start_label, LABEL);
    assert_eq!(stop_label, LABEL);
    assert_eq!(daemon["Label"], LABEL);
    assert_eq!(PLIST_PATH, format!("Library/LaunchDaemons/{LABEL}.plist"));

    assert_eq!(daemon["RunAtLoad"], Value::Bool(true));
    assert_eq!(daemon["KeepAlive"], Value::Bool(true));
    assert_eq!(daemon["UserName"], "root");
    assert!(
        daemon["ThrottleInterval"].as_u64().unwrap_or(0) > 0,
        "{daemon}"
    );
    // Time to undo routes and resolver files on SIGTERM (launchd's default is 20 s).
    assert!(
        daemon["ExitTimeOut"].as_u64().unwrap_or(0) >= 20,
        "{daemon}"
    );

    let program = daemon["ProgramArguments"][0]
        .as_str()
        .expect("ProgramArguments[0]");
    assert_eq!(program, format!("/{HELPER_PATH}"));
    assert!(root
        .join(
            Path::new(program)
                .parent()
                .unwrap()
                .strip_prefix("/")
                .unwrap()
        )
        .is_dir());

    // stderr goes to the helper's log directory, which the payload creates
    // (launchd does not) and newsyslog rotates.
    let stderr = daemon["StandardErrorPath"]
        .as_str()
        .expect("StandardErrorPath");
    let log_dir = Path::new(stderr).parent().unwrap();
    let src = fs::read_to_string(repo().join("crates/warren-ipc/src/platform/macos.rs")).unwrap();
    assert!(
        src.contains(&format!("PathBuf::from(\"{}\")", log_dir.display())),
        "StandardErrorPath {stderr} is not in the helper's log dir"
    );
    assert!(root.join(log_dir.strip_prefix("/").unwrap()).is_dir());
    let newsyslog =
        fs::read_to_string(root.join("private/etc/newsyslog.d/dev.warren.warrend.conf")).unwrap();
    assert!(
        newsyslog
            .lines()
            .any(|l| !l.starts_with('#') && l.split_whitespace().next() == Some(stderr)),
        "{newsyslog}"
    );
    // Not a name the helper's own rotating log (warrend.*.log) prunes.
    assert!(!Path::new(stderr)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("warrend"));

    let conf = tauri_conf();
    assert_eq!(
        daemon["AssociatedBundleIdentifiers"][0], conf["identifier"],
        "{daemon}"
    );
}

#[test]
fn the_app_bundle_metadata_matches_tauri_and_cargo() {
    let scratch = tempfile::tempdir().unwrap();
    let stage = staged(scratch.path());
    let contents = stage.join("root/Applications/Warren.app/Contents");
    let info = plist(&contents.join("Info.plist"));
    let conf = tauri_conf();
    let version = env!("CARGO_PKG_VERSION");

    assert_eq!(info["CFBundleIdentifier"], conf["identifier"]);
    assert_eq!(info["CFBundleExecutable"], conf["mainBinaryName"]);
    assert_eq!(info["CFBundleName"], conf["productName"]);
    assert_eq!(info["CFBundlePackageType"], "APPL");
    assert_eq!(info["CFBundleShortVersionString"], version);
    assert_eq!(info["CFBundleVersion"], version);
    assert_eq!(
        conf["version"], version,
        "tauri.conf.json and Cargo disagree"
    );
    // Catalina: /etc/resolver and launchctl bootstrap/bootout as used here.
    assert_eq!(info["LSMinimumSystemVersion"], "10.15");
    let schemes: Vec<String> = info["CFBundleURLTypes"]
        .as_array()
        .expect("CFBundleURLTypes")
        .iter()
        .flat_map(|t| {
            t["CFBundleURLSchemes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    assert_eq!(schemes, ["warren"]);

    assert_eq!(fs::read(contents.join("PkgInfo")).unwrap(), b"APPL????");
    let icon = info["CFBundleIconFile"].as_str().expect("CFBundleIconFile");
    let icns = fs::read(contents.join(format!("Resources/{icon}.icns"))).unwrap();
    assert_eq!(&icns[..4], b"icns");
    assert_eq!(
        u32::from_be_bytes(icns[4..8].try_into().unwrap()) as usize,
        icns.len()
    );
    assert_eq!(&icns[8..12], b"ic07");

    // The component plist pins the app to /Applications.
    let components = plist(&stage.join("components.plist"));
    let app = &components[0];
    assert_eq!(app["RootRelativeBundlePath"], "Applications/Warren.app");
    assert_eq!(app["BundleIsRelocatable"], Value::Bool(false));
    assert!(stage.join("root").join("Applications/Warren.app").is_dir());
}

#[test]
fn the_distribution_names_the_component_its_version_and_the_startup_volume() {
    let scratch = tempfile::tempdir().unwrap();
    let stage = staged(scratch.path());
    let out = Command::new("python3")
        .args([
            "-c",
            r#"
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ref = [r for r in root.iter("pkg-ref") if r.text][0]
print(json.dumps({
    "tag": root.tag,
    "domains": root.find("domains").attrib,
    "archs": root.find("options").attrib.get("hostArchitectures"),
    "ref": {"id": ref.get("id"), "version": ref.get("version"), "file": ref.text.strip()},
    "choices": [r.get("id") for r in root.iter("pkg-ref") if not r.text],
}))
"#,
        ])
        .arg(stage.join("Distribution.xml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let dist: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dist["tag"], "installer-gui-script");
    assert_eq!(dist["domains"]["enable_localSystem"], "true");
    assert_eq!(dist["domains"]["enable_anywhere"], "false");
    assert_eq!(dist["domains"]["enable_currentUserHome"], "false");
    assert_eq!(dist["archs"], "x86_64");
    assert_eq!(dist["ref"]["id"], "dev.warren.pkg");
    assert_eq!(dist["ref"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(dist["ref"]["file"], "warren-component.pkg");
    assert_eq!(dist["choices"], serde_json::json!(["dev.warren.pkg"]));
    let raw = fs::read_to_string(stage.join("Distribution.xml")).unwrap();
    assert!(!raw.contains('@'), "a placeholder was left: {raw}");
}

#[test]
fn the_scripts_pass_sh_n_and_shellcheck() {
    let scratch = tempfile::tempdir().unwrap();
    let stage = staged(scratch.path());
    let scripts = [
        stage.join("scripts/preinstall"),
        stage.join("scripts/postinstall"),
        stage.join("root/Library/Application Support/Warren/uninstall.sh"),
    ];
    for script in &scripts {
        let first = fs::read_to_string(script).unwrap();
        assert!(first.starts_with("#!/bin/sh\n"), "{}", script.display());
        let out = Command::new("sh").arg("-n").arg(script).output().unwrap();
        assert!(out.status.success(), "{}: {}", script.display(), text(&out));
        let out = Command::new("shellcheck")
            .args(["-s", "sh"])
            .arg(script)
            .output()
            .expect("shellcheck is installed (apt-get install shellcheck)");
        assert!(out.status.success(), "{}: {}", script.display(), text(&out));
    }
    let out = Command::new("shellcheck")
        .arg(repo().join("installer/macos/build-pkg.sh"))
        .output()
        .expect("shellcheck is installed (apt-get install shellcheck)");
    assert!(out.status.success(), "build-pkg.sh: {}", text(&out));
}

/// A Mach-O header: a thin 64-bit binary for one CPU type, or a universal
/// one listing several.
fn macho(cpus: &[u32]) -> Vec<u8> {
    let mut data = Vec::new();
    if let [cpu] = cpus {
        data.extend_from_slice(&0xFEED_FACFu32.to_le_bytes());
        data.extend_from_slice(&cpu.to_le_bytes());
    } else {
        data.extend_from_slice(&0xCAFE_BABEu32.to_be_bytes());
        data.extend_from_slice(&(cpus.len() as u32).to_be_bytes());
        for cpu in cpus {
            data.extend_from_slice(&cpu.to_be_bytes());
            data.extend_from_slice(&[0; 16]);
        }
    }
    data.extend_from_slice(&[0; 64]);
    data
}

const X86_64: u32 = 0x0100_0007;
const ARM64: u32 = 0x0100_000C;

fn bin_dir(scratch: &Path, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let dir = scratch.join("darwin-bin");
    fs::create_dir_all(&dir).unwrap();
    for (name, data) in files {
        fs::write(dir.join(name), data).unwrap();
    }
    dir
}

#[test]
fn darwin_binaries_are_staged_where_the_plist_and_bundle_expect_them() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = bin_dir(
        scratch.path(),
        &[
            ("warren-desktop", macho(&[X86_64, ARM64])),
            ("warren", macho(&[X86_64])),
            ("warrend", macho(&[ARM64, X86_64])),
        ],
    );
    let stage = scratch.path().join("stage");
    let out = build_pkg(scratch.path(), &stage, Some(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let root = stage.join("root");
    for (from, to) in [
        (
            "warren-desktop",
            "Applications/Warren.app/Contents/MacOS/warren-desktop",
        ),
        ("warren", "usr/local/bin/warren"),
        ("warrend", HELPER_PATH),
    ] {
        assert_eq!(
            fs::read(root.join(to)).unwrap(),
            fs::read(dir.join(from)).unwrap(),
            "{to}"
        );
        assert_eq!(mode(&root.join(to)), 0o755, "{to}");
    }
    // Only what every binary runs on: the CLI is x86_64 only.
    let dist = fs::read_to_string(stage.join("Distribution.xml")).unwrap();
    assert!(dist.contains(r#"hostArchitectures="x86_64""#), "{dist}");
    // Without pkgbuild (not a Mac) it stops after staging, and says so.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pkgbuild and productbuild exist only on macOS"),
        "{stdout}"
    );

    // All universal: both architectures.
    let dir = bin_dir(scratch.path(), &[("warren", macho(&[X86_64, ARM64]))]);
    let out = build_pkg(scratch.path(), &stage, Some(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let dist = fs::read_to_string(stage.join("Distribution.xml")).unwrap();
    assert!(
        dist.contains(r#"hostArchitectures="arm64,x86_64""#),
        "{dist}"
    );
}

#[test]
fn linux_binaries_or_a_missing_one_fail_the_build() {
    let scratch = tempfile::tempdir().unwrap();
    let stage = scratch.path().join("stage");
    let elf = fs::read("/bin/sh").unwrap();
    let dir = bin_dir(
        scratch.path(),
        &[
            ("warren-desktop", macho(&[X86_64])),
            ("warren", macho(&[X86_64])),
            ("warrend", elf),
        ],
    );
    let out = build_pkg(scratch.path(), &stage, Some(&dir));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a 64-bit Mach-O"),
        "{}",
        text(&out)
    );

    fs::remove_file(dir.join("warrend")).unwrap();
    let out = build_pkg(scratch.path(), &stage, Some(&dir));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no warrend"),
        "{}",
        text(&out)
    );
}

/// Mock macOS tools in a PATH directory, keeping their state in `state/`
/// and appending each call to `state/calls`.
struct Mac {
    _scratch: tempfile::TempDir,
    stage: PathBuf,
    /// The scratch volume the scripts treat as "/".
    volume: PathBuf,
    state: PathBuf,
    bin: PathBuf,
}

const MOCKS: &[(&str, &str)] = &[
    (
        "launchctl",
        r#"echo "launchctl $*" >>"$MOCK/calls"
case "$1" in
print) [ "$2" = system/dev.warren.warrend ] && [ -f "$MOCK/loaded" ] ;;
bootout)
    # What the helper would see: are its files still there when it stops?
    if [ -f "$MOCK_VOLUME/Library/PrivilegedHelperTools/warrend" ]; then echo "bootout while installed" >>"$MOCK/calls"; fi
    [ -f "$MOCK/bootout_fails" ] && exit 5
    rm -f "$MOCK/loaded" ;;
unload) [ -f "$MOCK/stuck" ] || rm -f "$MOCK/loaded" ;;
bootstrap)
    [ "$2" = system ] && [ -f "$3" ] || exit 5
    [ -f "$MOCK/bootstrap_fails" ] && exit 5
    [ -f "$MOCK/loaded" ] && exit 37
    touch "$MOCK/loaded" ;;
enable|kickstart) [ "$2" = system/dev.warren.warrend ] ;;
*) exit 64 ;;
esac"#,
    ),
    (
        "dseditgroup",
        r#"echo "dseditgroup $*" >>"$MOCK/calls"
op=$2
eval "group=\${$#}"
case "$op" in
read) [ -f "$MOCK/group_$group" ] ;;
create) [ -f "$MOCK/group_$group" ] && exit 1; touch "$MOCK/group_$group" ;;
checkmember) [ -f "$MOCK/group_$group" ] && grep -qx "$4" "$MOCK/group_$group" ;;
edit) [ -f "$MOCK/group_$group" ] && [ "$3" = -a ] && echo "$4" >>"$MOCK/group_$group" ;;
delete) [ -f "$MOCK/group_$group" ] && rm "$MOCK/group_$group" ;;
*) exit 64 ;;
esac"#,
    ),
    (
        "stat",
        r#"echo "stat $*" >>"$MOCK/calls"
[ "$*" = "-f%Su /dev/console" ] || exit 64
cat "$MOCK/console""#,
    ),
    (
        "id",
        r#"echo "id $*" >>"$MOCK/calls"
[ "$1" = -u ] || exit 64
if [ $# = 1 ]; then cat "$MOCK/uid"; exit 0; fi
grep -qx "$2" "$MOCK/users" || { echo "id: $2: no such user" >&2; exit 1; }
echo 501"#,
    ),
    (
        "chown",
        r#"echo "chown $*" >>"$MOCK/calls"
[ "$1" = root:wheel ]"#,
    ),
    (
        "pkgutil",
        r#"echo "pkgutil $*" >>"$MOCK/calls"
case "$1" in
--pkg-info) [ -f "$MOCK/receipt_$2" ] ;;
--forget) [ -f "$MOCK/receipt_$2" ] && rm "$MOCK/receipt_$2" ;;
*) exit 64 ;;
esac"#,
    ),
];

/// Who is around when a script runs.
struct Session<'a> {
    user: &'a str,
    sudo_user: Option<&'a str>,
    console: &'a str,
    uid: u32,
}

const ALICE_AT_INSTALLER: Session = Session {
    user: "alice",
    sudo_user: None,
    console: "alice",
    uid: 0,
};

impl Mac {
    fn new() -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let stage = staged(scratch.path());
        let volume = scratch.path().join("volume");
        let state = scratch.path().join("state");
        let bin = scratch.path().join("mockbin");
        fs::create_dir_all(&volume).unwrap();
        fs::create_dir_all(&state).unwrap();
        fs::create_dir_all(&bin).unwrap();
        for (name, body) in MOCKS {
            let path = bin.join(name);
            fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::write(state.join("users"), "alice\nbob\n").unwrap();
        fs::write(state.join("calls"), "").unwrap();
        Mac {
            _scratch: scratch,
            stage,
            volume,
            state,
            bin,
        }
    }

    /// What Installer does: the payload lands on the volume (with a helper
    /// binary, which this machine can't build), and the receipt is written.
    fn lay_down_payload(&self) {
        let out = Command::new("cp")
            .arg("-a")
            .arg(self.stage.join("root/."))
            .arg(&self.volume)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        fs::write(self.volume.join(HELPER_PATH), "helper").unwrap();
        fs::set_permissions(
            self.volume.join(HELPER_PATH),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        fs::write(self.state.join("receipt_dev.warren.pkg"), "").unwrap();
    }

    fn run(&self, shell: &str, script: &Path, args: &[&Path], who: &Session) -> Output {
        fs::write(self.state.join("console"), format!("{}\n", who.console)).unwrap();
        fs::write(self.state.join("uid"), format!("{}\n", who.uid)).unwrap();
        let mut cmd = Command::new(shell);
        cmd.arg(script)
            .args(args)
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin:/usr/sbin:/sbin", self.bin.display()),
            )
            .env("MOCK", &self.state)
            .env("MOCK_VOLUME", &self.volume)
            .env("USER", who.user);
        if let Some(sudo_user) = who.sudo_user {
            cmd.env("SUDO_USER", sudo_user);
        }
        cmd.output().unwrap()
    }

    /// Installer's run of a pkg script: $1 package, $2 location, $3 volume.
    fn pkg_script(&self, shell: &str, name: &str, who: &Session) -> Output {
        let pkg = self.stage.join("Warren.pkg");
        self.run(
            shell,
            &self.stage.join("scripts").join(name),
            &[&pkg, Path::new("/"), &self.volume],
            who,
        )
    }

    fn install(&self, shell: &str, who: &Session) -> (Output, Output) {
        let pre = self.pkg_script(shell, "preinstall", who);
        if !pre.status.success() {
            return (pre.clone(), pre);
        }
        self.lay_down_payload();
        let post = self.pkg_script(shell, "postinstall", who);
        (pre, post)
    }

    fn uninstall(&self, shell: &str, who: &Session) -> Output {
        let script = self
            .volume
            .join("Library/Application Support/Warren/uninstall.sh");
        let script = if script.exists() {
            script
        } else {
            repo().join("installer/macos/uninstall.sh")
        };
        self.run(shell, &script, &[&self.volume], who)
    }

    /// The calls since the last take, without the read-only ones (`id`,
    /// `stat`, `launchctl print`, `dseditgroup -o read`/`checkmember`,
    /// `pkgutil --pkg-info`), which scripts may make as often as they like.
    fn take_calls(&self) -> Vec<String> {
        let calls = fs::read_to_string(self.state.join("calls")).unwrap();
        fs::write(self.state.join("calls"), "").unwrap();
        calls
            .lines()
            .filter(|c| {
                !(c.starts_with("id ")
                    || c.starts_with("stat ")
                    || c.starts_with("launchctl print ")
                    || c.starts_with("dseditgroup -o read ")
                    || c.starts_with("dseditgroup -o checkmember ")
                    || c.starts_with("pkgutil --pkg-info "))
            })
            .map(|c| c.replace(&self.volume.display().to_string(), "$VOL"))
            .collect()
    }

    fn flag(&self, name: &str) -> bool {
        self.state.join(name).exists()
    }

    fn set_flag(&self, name: &str) {
        fs::write(self.state.join(name), "").unwrap();
    }

    fn members(&self) -> Option<Vec<String>> {
        fs::read_to_string(self.state.join("group_warren"))
            .ok()
            .map(|s| s.lines().map(str::to_string).collect())
    }
}

const SHELLS: [&str; 2] = ["sh", "bash"];

fn fresh_install_calls(add: Option<&str>) -> Vec<String> {
    let mut calls = vec![
        format!("chown root:wheel $VOL/{PLIST_PATH} $VOL/{HELPER_PATH}"),
        "chown root:wheel $VOL/Library/Application Support/Warren/uninstall.sh".to_string(),
        "dseditgroup -o create -r Warren helper users warren".to_string(),
    ];
    if let Some(user) = add {
        calls.push(format!("dseditgroup -o edit -a {user} -t user warren"));
    }
    calls.extend([
        format!("launchctl enable system/{LABEL}"),
        format!("launchctl bootstrap system $VOL/{PLIST_PATH}"),
        format!("launchctl kickstart system/{LABEL}"),
    ]);
    calls
}

#[test]
fn a_fresh_install_creates_the_group_adds_the_installing_user_and_loads_the_daemon() {
    for shell in SHELLS {
        let mac = Mac::new();
        let (pre, post) = mac.install(shell, &ALICE_AT_INSTALLER);
        assert!(pre.status.success(), "{shell} preinstall: {}", text(&pre));
        assert!(
            post.status.success(),
            "{shell} postinstall: {}",
            text(&post)
        );
        assert_eq!(
            mac.take_calls(),
            fresh_install_calls(Some("alice")),
            "{shell}: {}",
            text(&post)
        );
        assert!(mac.flag("loaded"));
        assert_eq!(mac.members(), Some(vec!["alice".to_string()]));
        assert!(String::from_utf8_lossy(&post.stdout).contains("log out and back in"));
        assert_eq!(mode(&mac.volume.join(PLIST_PATH)), 0o644);
        assert_eq!(mode(&mac.volume.join(HELPER_PATH)), 0o755);
    }
}

#[test]
fn sudo_installer_from_a_terminal_adds_the_sudo_caller_and_a_console_user_otherwise() {
    let mac = Mac::new();
    let who = Session {
        user: "root",
        sudo_user: Some("bob"),
        console: "alice",
        uid: 0,
    };
    let (_, post) = mac.install("sh", &who);
    assert!(post.status.success(), "{}", text(&post));
    assert_eq!(mac.members(), Some(vec!["bob".to_string()]));

    let mac = Mac::new();
    let who = Session {
        user: "root",
        sudo_user: None,
        console: "alice",
        uid: 0,
    };
    let (_, post) = mac.install("sh", &who);
    assert!(post.status.success(), "{}", text(&post));
    assert_eq!(mac.members(), Some(vec!["alice".to_string()]));
}

#[test]
fn an_install_with_nobody_logged_in_still_succeeds_and_adds_no_one() {
    for shell in SHELLS {
        for (user, console) in [
            ("root", "root"),
            ("root", "loginwindow"),
            ("_mbsetupuser", "_mbsetupuser"),
            // A name that is not an account on this Mac is nobody to add.
            ("ghost", "root"),
            ("", ""),
        ] {
            let mac = Mac::new();
            let who = Session {
                user,
                sudo_user: None,
                console,
                uid: 0,
            };
            let (pre, post) = mac.install(shell, &who);
            assert!(
                pre.status.success(),
                "{shell} {user}/{console}: {}",
                text(&pre)
            );
            assert!(
                post.status.success(),
                "{shell} {user}/{console}: {}",
                text(&post)
            );
            assert_eq!(
                mac.take_calls(),
                fresh_install_calls(None),
                "{shell} {user}/{console}"
            );
            assert_eq!(mac.members(), Some(vec![]));
            assert!(mac.flag("loaded"));
            assert!(
                String::from_utf8_lossy(&post.stdout)
                    .contains("sudo dseditgroup -o edit -a NAME -t user warren"),
                "{}",
                text(&post)
            );
        }
    }
}

#[test]
fn an_upgrade_boots_the_running_daemon_out_first_and_keeps_the_group() {
    for shell in SHELLS {
        let mac = Mac::new();
        let (_, post) = mac.install(shell, &ALICE_AT_INSTALLER);
        assert!(post.status.success(), "{}", text(&post));
        mac.take_calls();

        let (pre, post) = mac.install(shell, &ALICE_AT_INSTALLER);
        assert!(pre.status.success(), "{shell} preinstall: {}", text(&pre));
        assert!(
            post.status.success(),
            "{shell} postinstall: {}",
            text(&post)
        );
        assert_eq!(
            mac.take_calls(),
            [
                format!("launchctl bootout system/{LABEL}"),
                // preinstall runs before the payload is replaced
                "bootout while installed".to_string(),
                format!("chown root:wheel $VOL/{PLIST_PATH} $VOL/{HELPER_PATH}"),
                "chown root:wheel $VOL/Library/Application Support/Warren/uninstall.sh".to_string(),
                format!("launchctl enable system/{LABEL}"),
                format!("launchctl bootstrap system $VOL/{PLIST_PATH}"),
                format!("launchctl kickstart system/{LABEL}"),
            ],
            "{shell}"
        );
        assert!(mac.flag("loaded"));
        assert_eq!(mac.members(), Some(vec!["alice".to_string()]));
    }
}

#[test]
fn a_daemon_that_will_not_stop_fails_the_preinstall_and_a_failed_load_the_postinstall() {
    let mac = Mac::new();
    let (_, post) = mac.install("sh", &ALICE_AT_INSTALLER);
    assert!(post.status.success(), "{}", text(&post));
    mac.take_calls();

    // bootout fails but the legacy unload works: the upgrade goes on.
    mac.set_flag("bootout_fails");
    let pre = mac.pkg_script("sh", "preinstall", &ALICE_AT_INSTALLER);
    assert!(pre.status.success(), "{}", text(&pre));
    assert!(!mac.flag("loaded"));
    assert_eq!(
        mac.take_calls(),
        [
            format!("launchctl bootout system/{LABEL}"),
            "bootout while installed".to_string(),
            format!("launchctl unload $VOL/{PLIST_PATH}"),
        ]
    );

    // Neither works: the install stops before replacing a running helper.
    mac.set_flag("loaded");
    mac.set_flag("stuck");
    let pre = mac.pkg_script("sh", "preinstall", &ALICE_AT_INSTALLER);
    assert!(!pre.status.success(), "{}", text(&pre));
    assert!(
        String::from_utf8_lossy(&pre.stderr)
            .contains(&format!("sudo launchctl bootout system/{LABEL}")),
        "{}",
        text(&pre)
    );

    // launchd refusing the plist fails the install, with what to look at.
    let mac = Mac::new();
    mac.set_flag("bootstrap_fails");
    let (_, post) = mac.install("sh", &ALICE_AT_INSTALLER);
    assert!(!post.status.success(), "{}", text(&post));
    assert!(
        String::from_utf8_lossy(&post.stderr).contains("launchctl print"),
        "{}",
        text(&post)
    );

    // Not root: refused before touching anything.
    let mac = Mac::new();
    mac.lay_down_payload();
    let who = Session {
        uid: 501,
        ..ALICE_AT_INSTALLER
    };
    let post = mac.pkg_script("sh", "postinstall", &who);
    assert!(!post.status.success(), "{}", text(&post));
    assert_eq!(mac.take_calls(), Vec::<String>::new());
}

#[test]
fn uninstall_stops_the_helper_first_then_removes_everything_it_installed() {
    for shell in SHELLS {
        let mac = Mac::new();
        let (_, post) = mac.install(shell, &ALICE_AT_INSTALLER);
        assert!(post.status.success(), "{}", text(&post));
        mac.take_calls();

        // A helper killed mid-way left a journal naming one resolver file;
        // another resolver file is not Warren's and stays.
        let resolver = mac.volume.join("etc/resolver");
        fs::create_dir_all(&resolver).unwrap();
        fs::write(resolver.join("alice.warren"), "nameserver 127.0.0.53\n").unwrap();
        fs::write(resolver.join("corp.example"), "nameserver 10.0.0.1\n").unwrap();
        fs::write(
            mac.volume
                .join("Library/Application Support/Warren/netstate.json"),
            r#"{
  "version": 1,
  "changes": [
    {
      "kind": "tun",
      "name": "utun7",
      "persistent": false
    },
    {
      "kind": "mac_resolver",
      "path": "/etc/resolver/alice.warren"
    }
  ]
}"#,
        )
        .unwrap();
        fs::create_dir_all(mac.volume.join("var/run/warren")).unwrap();
        fs::write(
            mac.volume.join("Library/Logs/Warren/launchd-stderr.log"),
            "x",
        )
        .unwrap();

        let out = mac.uninstall(shell, &ALICE_AT_INSTALLER);
        assert!(out.status.success(), "{shell}: {}", text(&out));
        assert_eq!(
            mac.take_calls(),
            [
                format!("launchctl bootout system/{LABEL}"),
                "bootout while installed".to_string(),
                "dseditgroup -o delete warren".to_string(),
                "pkgutil --forget dev.warren.pkg".to_string(),
            ],
            "{shell}: {}",
            text(&out)
        );
        assert!(!mac.flag("loaded"));
        assert_eq!(mac.members(), None);
        assert!(!mac.flag("receipt_dev.warren.pkg"));
        assert!(!resolver.join("alice.warren").exists());
        assert!(resolver.join("corp.example").exists());
        for gone in [
            PLIST_PATH,
            HELPER_PATH,
            "usr/local/bin/warren",
            "Applications/Warren.app",
            "Library/Logs/Warren",
            "Library/Application Support/Warren",
            "private/etc/newsyslog.d/dev.warren.warrend.conf",
            "var/run/warren",
        ] {
            assert!(!mac.volume.join(gone).exists(), "{shell}: {gone} is left");
        }
        // System directories the payload shares stay.
        assert!(mac.volume.join("Library/LaunchDaemons").is_dir());
        assert!(mac.volume.join("usr/local/bin").is_dir());

        // Running it again on a clean machine is harmless.
        let again = mac.uninstall(shell, &ALICE_AT_INSTALLER);
        assert!(again.status.success(), "{shell}: {}", text(&again));
        assert_eq!(mac.take_calls(), Vec::<String>::new());
    }
}

#[test]
fn uninstall_refuses_without_root_and_keeps_files_if_the_helper_will_not_stop() {
    let mac = Mac::new();
    let (_, post) = mac.install("sh", &ALICE_AT_INSTALLER);
    assert!(post.status.success(), "{}", text(&post));
    mac.take_calls();

    let who = Session {
        uid: 501,
        ..ALICE_AT_INSTALLER
    };
    let out = mac.uninstall("sh", &who);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sudo"));
    assert_eq!(mac.take_calls(), Vec::<String>::new());

    mac.set_flag("bootout_fails");
    mac.set_flag("stuck");
    let out = mac.uninstall("sh", &ALICE_AT_INSTALLER);
    assert!(!out.status.success(), "{}", text(&out));
    // Its files stay, so a helper that does stop later can still undo its changes.
    assert!(mac.volume.join(HELPER_PATH).exists());
    assert!(mac.volume.join(PLIST_PATH).exists());
    assert_eq!(mac.members(), Some(vec!["alice".to_string()]));
}
