//! The C ABI from C: `examples/c/kv.c` compiled with the system's C compiler against
//! `capi/include/cradle.h`, linked against libcradle (static, then shared), and run against a
//! real `cradle node`.

mod common;

use common::NodeProcess;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The C compiler (`$CC`, else `cc`), if one runs.
fn c_compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let runs = Command::new(&cc).arg("--version").output().is_ok_and(|out| out.status.success());
    runs.then_some(cc)
}

/// The directory holding libcradle.a and libcradle.so: this test's dependencies were built
/// next to it (`target/<profile>/deps`), `cradle-capi` among them.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let deps = exe.parent().expect("deps directory").to_path_buf();
    for dir in [deps.clone(), deps.parent().expect("profile directory").to_path_buf()] {
        if dir.join("libcradle.a").exists() && dir.join("libcradle.so").exists() {
            return dir;
        }
    }
    panic!("libcradle.a and libcradle.so not found next to {}", exe.display());
}

fn compile(cc: &str, output: &Path, link: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(output)
        .arg(root.join("examples/c/kv.c"))
        .arg("-I")
        .arg(root.join("capi/include"))
        .args(link)
        .status()
        .expect("run the C compiler");
    assert!(status.success(), "{cc} failed to build examples/c/kv.c with {link:?}");
}

fn run_example(program: &Path, node: &NodeProcess, library_path: Option<&Path>) {
    let mut command = Command::new(program);
    command.arg(node.server());
    if let Some(dir) = library_path {
        command.env("LD_LIBRARY_PATH", dir);
    }
    let out = command.output().expect("run the C example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kv failed ({}): {stdout}{stderr}", out.status);
    assert!(stdout.contains("get c:greeting -> \"hello from C\""), "{stdout}");
    assert!(
        stdout.contains("get_many c:greeting c:absent c:other -> \"bye\", absent, \"42\""),
        "{stdout}"
    );
    assert!(stdout.contains("incr c:budget 5, -3, -2 -> 0; -1 -> below the floor"), "{stdout}");
    assert!(stdout.contains("put_ttl c:brief 1 s -> read, then gone"), "{stdout}");
    assert!(stdout.trim_end().ends_with("kv: ok"), "{stdout}");
}

#[test]
fn the_c_example_connects_puts_gets_and_deletes() {
    let Some(cc) = c_compiler() else {
        eprintln!("skipped: no C compiler (set CC or install gcc)");
        return;
    };
    let lib = library_dir();
    let build = tempfile::tempdir().expect("temp dir");
    let node = NodeProcess::start(2, 16, &[]);

    let static_kv = build.path().join("kv-static");
    let archive = lib.join("libcradle.a");
    compile(&cc, &static_kv, &[archive.to_str().unwrap(), "-lpthread", "-ldl", "-lm"]);
    run_example(&static_kv, &node, None);

    let shared_kv = build.path().join("kv-shared");
    let search = format!("-L{}", lib.display());
    compile(&cc, &shared_kv, &[&search, "-lcradle"]);
    run_example(&shared_kv, &node, Some(&lib));

    // What C did is what Rust sees: the key is gone, the node served the writes.
    let mut client = client::Client::connect(client::ClientConfig::new(vec![node.addr])).unwrap();
    assert_eq!(client.get(b"c:greeting").unwrap(), None);
    assert_eq!(client.get(b"c:other").unwrap().map(|value| value.bytes), Some(b"42".to_vec()));

    // A node that is not there: the example reports the failure and exits 1.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = Command::new(&static_kv).arg(silent.local_addr().unwrap().to_string()).output();
    let out = out.expect("run the C example");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kv: connect: CRADLE_TIMEOUT"), "{stderr}");
}
