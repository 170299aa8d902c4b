//! Smoke test of the load generator: tiny numbers against the real server binary on
//! 127.0.0.1; every phase must complete. Performance is not asserted here (debug build,
//! shared machine); `fileapp-load` in release is the measurement.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn load_generator_runs_every_phase_with_few_clients() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fileapp-load"))
        .args([
            "--clients",
            "50",
            "--duration-secs",
            "1",
            "--rounds",
            "5",
            "--memory-clients",
            "500",
            "--json",
            "--server-bin",
            env!("CARGO_BIN_EXE_fileapp"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fileapp-load");
    // Bounded: the generator stops by itself; never wait forever on it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fileapp-load did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "exit {status}: {err}\n{out}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("JSON report");

    let reg = &r["registration"];
    assert_eq!(reg["clients"], 50, "{reg}");
    assert_eq!(reg["welcomed"], 50, "{reg}");
    assert_eq!(reg["rejected"], 0, "{reg}");
    assert_eq!(r["sync"]["in_sync"], true, "{}", r["sync"]);

    // Each client handshook and answered a challenge (more than once only if the
    // server was slow enough for a retransmission to start a new session).
    let reg_c = &reg["counters"];
    assert!(reg_c["handshakes"].as_u64().unwrap() >= 50, "{reg}");
    assert!(reg_c["challenges"].as_u64().unwrap() >= 50, "{reg}");

    let t = &r["throughput"];
    assert!(t["acked"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(
        t["counters"]["heartbeat_acks"], t["counters"]["acks"],
        "{t}"
    );

    // The mixed phase registers from scratch (handshake, challenge, proof) and offers.
    let m = &r["mixed"];
    let mc = &m["counters"];
    assert!(mc["heartbeat_acks"].as_u64().unwrap() > 0, "{m}");
    assert!(mc["offer_acks"].as_u64().unwrap() > 0, "{m}");
    assert!(mc["welcomes"].as_u64().unwrap() > 0, "{m}");
    assert!(mc["handshakes"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(m["rejected"], 0, "{m}");

    let p = &r["propagation"];
    assert_eq!(p["clients"], 50, "{p}");
    assert_eq!(p["completed"], 5, "{p}");
    assert!(p["all_max_ms"].as_f64().unwrap() > 0.0, "{p}");

    let m = &r["memory"];
    // Every client had its own socket.
    assert_eq!(r["sockets"], 50);
    assert_eq!(m["load"]["welcomed"], 500, "{m}");
    assert_eq!(m["load"]["offers_acked"], 500, "{m}");
    assert!(m["peak_rss_kib"].as_u64().unwrap() > 0, "{m}");
    assert!(
        m["load"]["counters"]["handshakes"].as_u64().unwrap() >= 500,
        "{m}"
    );
    assert!(
        r["server_exit"].as_str().unwrap().starts_with("stopped"),
        "{}",
        r["server_exit"]
    );
}
