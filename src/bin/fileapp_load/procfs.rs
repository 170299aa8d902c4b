//! What the kernel says about the host and the server process, read from `/proc`: UDP
//! drop counters, CPU time, memory high-water mark, load average. Linux only; a value
//! that cannot be read is reported as 0 rather than failing the run.

/// Kernel UDP counters (all sockets of the host): drops show up here.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct UdpCounters {
    pub in_errors: u64,
    pub rcvbuf_errors: u64,
    pub sndbuf_errors: u64,
}

impl UdpCounters {
    pub fn read() -> UdpCounters {
        let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
        let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return UdpCounters::default();
        };
        let get = |key: &str| -> u64 {
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(n, _)| *n == key)
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0)
        };
        UdpCounters {
            in_errors: get("InErrors"),
            rcvbuf_errors: get("RcvbufErrors"),
            sndbuf_errors: get("SndbufErrors"),
        }
    }

    pub fn since(self, before: UdpCounters) -> UdpCounters {
        UdpCounters {
            in_errors: self.in_errors.saturating_sub(before.in_errors),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(before.sndbuf_errors),
        }
    }
}

/// CPU seconds (user + system, all threads) used so far by process `pid`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the ")" closing the command name; utime and stime are 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // 100 is what Linux reports on every architecture it runs on.
    let hz = super::sys::clock_ticks_per_second().unwrap_or(100);
    ticks as f64 / hz as f64
}

/// A `VmXxx:` line of /proc/<pid>/status, in KiB.
pub fn vm_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The host's 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
