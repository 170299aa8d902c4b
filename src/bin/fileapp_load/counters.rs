//! What the simulated clients sent and received: one counter per event, subtracted
//! between two snapshots to give a phase's share. Serialised as-is into the JSON report.

use serde::Serialize;

macro_rules! counters {
    ($($f:ident),* $(,)?) => {
        /// What the simulated clients sent and received.
        #[derive(Debug, Default, Clone, Copy, Serialize)]
        pub struct Counters { $(pub $f: u64),* }
        impl Counters {
            pub fn since(&self, b: &Counters) -> Counters {
                Counters { $($f: self.$f.saturating_sub(b.$f)),* }
            }
        }
    };
}

counters!(
    datagrams_out,
    datagrams_in,
    send_failed,
    malformed,
    requests,
    handshakes,
    refused,
    channel_packets,
    challenges,
    reregistrations,
    moves,
    retransmits,
    gave_up,
    late_replies,
    welcomes,
    acks,
    heartbeat_acks,
    offer_acks,
    record_acks,
    rejected,
    rejected_name_in_use,
    rejected_invalid,
    rejected_not_registered,
    rejected_limit,
    rejected_rate_limited,
    table_parts,
    table_parts_dup,
    table_parts_ignored,
    table_acks_sent,
    deltas_applied,
    unexpected,
);
