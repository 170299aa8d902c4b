//! The command line: seed forms, long forms, options and their errors.

use super::*;

fn mode(args: &[&str]) -> Result<Mode, UsageError> {
    let cli = Cli::try_parse_from(std::iter::once("fileapp").chain(args.iter().copied()))
        .map_err(|e| UsageError(e.to_string()))?;
    cli.mode()
}

#[test]
fn seed_forms_validate_ports_and_address() {
    assert!(matches!(mode(&["-s", "12000"]), Ok(Mode::Server(c)) if c.port == 12000));
    assert_eq!(
        mode(&["-s", "1000"]).unwrap_err().0,
        "[Invalid server port]"
    );
    assert_eq!(mode(&["-s", "x"]).unwrap_err().0, "[Invalid server port]");
    assert_eq!(
        mode(&["-s", "70000"]).unwrap_err().0,
        "[Invalid server port]"
    );
    assert!(matches!(
        mode(&["-c", "B", "127.0.0.1", "12000", "1301", "1401"]),
        Ok(Mode::Client(c)) if c.udp_port == 1301 && c.tcp_port == 1401
    ));
    assert_eq!(
        mode(&["-c", "C", "127.0.0.1", "12000", "1302", "66000"])
            .unwrap_err()
            .0,
        "[Invalid client TCP port]"
    );
    assert_eq!(
        mode(&["-c", "C", "127.0.0.1", "12000", "80", "1401"])
            .unwrap_err()
            .0,
        "[Invalid client UDP port]"
    );
    assert_eq!(
        mode(&["-c", "C", "127.0.0.1", "99", "1301", "1401"])
            .unwrap_err()
            .0,
        "[Invalid server port]"
    );
    assert_eq!(
        mode(&["-c", "C", "300.1.2.3", "12000", "1301", "1401"])
            .unwrap_err()
            .0,
        "[Invalid server IP address]"
    );
    assert!(matches!(
        mode(&["-c", "C", "::1", "12000", "1301", "1401"]),
        Ok(Mode::Client(c)) if c.server.is_ipv6()
    ));
    assert!(matches!(
        mode(&["-c", "C", "localhost", "12000", "1301", "1401"]),
        Ok(Mode::Client(_))
    ));
}

#[test]
fn wrong_argument_count_gives_usage() {
    let e = mode(&["-c", "B", "127.0.0.1"]).unwrap_err().0;
    assert!(e.contains("Usage"), "{e}");
    assert_eq!(mode(&[]).unwrap_err().0, usage_line());
}

#[test]
fn long_forms() {
    assert!(matches!(
        mode(&["server", "--port", "0", "--bind", "127.0.0.1"]),
        Ok(Mode::Server(c)) if c.port == 0
    ));
    assert!(matches!(
        mode(&["client", "--name", "B", "--server", "127.0.0.1:5000", "--download-dir", "/tmp"]),
        Ok(Mode::Client(c)) if c.server.port() == 5000 && c.opts.download_dir.is_some()
    ));
    assert!(matches!(
        mode(&["client", "--name", "B", "--server", "[::1]:5000"]),
        Ok(Mode::Client(c)) if c.server.is_ipv6()
    ));
    assert!(matches!(
        mode(&["-s", "12000", "--db", "x.db"]),
        Ok(Mode::Server(c)) if c.opts.db.as_deref() == Some("x.db")
    ));
}

#[test]
fn relay_form_and_the_server_relay_switch() {
    let key = "ab".repeat(32);
    let Ok(Mode::Relay(c)) = mode(&["relay", "--port", "7000", "--server-key", &key]) else {
        panic!("relay form")
    };
    assert_eq!((c.port, c.bind), (7000, None));
    assert_eq!(c.relay.server_key, [0xab; 32]);
    assert_eq!(
        c.relay.max_sessions,
        crate::reach::relay::DEFAULT_MAX_SESSIONS
    );
    assert_eq!((c.relay.session_rate, c.relay.total_rate), (None, None));
    assert_eq!(
        c.relay.pair_timeout,
        crate::reach::relay::DEFAULT_PAIR_TIMEOUT
    );
    assert_eq!(
        c.relay.hello_timeout,
        crate::reach::relay::DEFAULT_HELLO_TIMEOUT
    );
    let Ok(Mode::Relay(c)) = mode(&[
        "relay",
        "-p",
        "0",
        "--server-key",
        &key,
        "--bind",
        "127.0.0.1",
        "--max-sessions",
        "9",
        "--rate",
        "2.5",
        "--total-rate",
        "100",
        "--pair-timeout-ms",
        "50",
    ]) else {
        panic!("relay form with options")
    };
    assert_eq!(c.bind, Some(IpAddr::from([127, 0, 0, 1])));
    assert_eq!(c.relay.max_sessions, 9);
    assert_eq!(c.relay.session_rate, Some(2_500_000));
    assert_eq!(c.relay.total_rate, Some(100_000_000));
    assert_eq!(c.relay.pair_timeout, Duration::from_millis(50));
    for bad in [
        vec!["relay", "--port", "1", "--server-key", "abc"],
        vec!["relay", "--port", "1", "--server-key", &key, "--rate", "0"],
        vec!["relay", "--port", "1", "--server-key", &key, "--rate", "-1"],
        vec!["relay", "--server-key", &key],
    ] {
        assert!(mode(&bad).is_err(), "{bad:?}");
    }
    assert!(matches!(mode(&["server"]), Ok(Mode::Server(c)) if !c.opts.no_relay));
    assert!(matches!(
        mode(&["server", "--no-relay", "--relay-at", "192.0.2.1:9000"]),
        Ok(Mode::Server(c)) if c.opts.relay_at == "192.0.2.1:9000".parse().ok()
    ));
    assert!(matches!(mode(&["server", "--no-relay"]), Ok(Mode::Server(c)) if c.opts.no_relay));
    assert!(matches!(mode(&["-s", "12000", "--no-relay"]), Ok(Mode::Server(c)) if c.opts.no_relay));
}

#[test]
fn defaults_are_the_ones_the_modes_use() {
    assert!(matches!(
        mode(&["server"]),
        Ok(Mode::Server(c)) if c.port == defaults::SERVER_PORT && c.opts.heartbeat_ms.is_none()
    ));
    assert!(matches!(
        mode(&["release-name", "B"]),
        Ok(Mode::ReleaseName { db, .. }) if db == std::path::Path::new(defaults::SERVER_DB)
    ));
    let Ok(Mode::Client(c)) = mode(&["client", "--name", "B", "--server", "127.0.0.1:9"]) else {
        panic!("client form")
    };
    assert_eq!(
        c.retry_interval(),
        crate::reliable::RetryPolicy::default().interval
    );
    let Ok(Mode::Client(c)) = mode(&["-c", "B", "127.0.0.1", "12000", "1301", "1401"]) else {
        panic!("seed form")
    };
    assert_eq!(c.retry_interval(), Duration::from_millis(500), "the seed's");
    assert_eq!(
        defaults::heartbeat(),
        crate::index::Config::default().heartbeat
    );
    assert_eq!(
        defaults::offline_after(),
        crate::index::Config::default().offline_after
    );
    let mut cmd = command();
    let help = cmd
        .find_subcommand_mut("server")
        .unwrap()
        .render_help()
        .to_string();
    assert!(help.contains("[default: 10000]"), "{help}");
    assert!(help.contains("[default: 30000,"), "{help}");
}

#[test]
fn a_client_takes_a_list_of_servers() {
    let servers = |arg: &str| match mode(&["client", "--name", "B", "--server", arg]) {
        Ok(Mode::Client(c)) => {
            assert_eq!(c.server, c.servers[0]);
            Ok(c.servers.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        }
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.0),
    };
    assert_eq!(
        servers("127.0.0.1:12000,127.0.0.1:12001").unwrap(),
        ["127.0.0.1:12000", "127.0.0.1:12001"]
    );
    // Duplicates once; spaces after commas are fine.
    assert_eq!(
        servers("127.0.0.1:1, 127.0.0.2:2,127.0.0.1:1").unwrap(),
        ["127.0.0.1:1", "127.0.0.2:2"]
    );
    // A server of the other family than the first cannot be reached from the one socket:
    // refused, not silently left out of the list.
    assert!(servers("127.0.0.1:1,[::1]:3").is_err());
    assert_eq!(servers("[::1]:3").unwrap(), ["[::1]:3"]);
    for bad in [
        "127.0.0.1:1,300.1.2.3:4",
        "127.0.0.1",
        ",",
        "127.0.0.1:1,x:y",
    ] {
        assert_eq!(
            servers(bad).unwrap_err(),
            "[Invalid server IP address]",
            "{bad}"
        );
    }
    // The seed form names one server.
    let Ok(Mode::Client(c)) = mode(&["-c", "C", "127.0.0.1", "12000", "1301", "1401"]) else {
        panic!("seed form")
    };
    assert_eq!(c.servers, [c.server]);
}
