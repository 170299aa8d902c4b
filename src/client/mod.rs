//! The client: its sans-io control-plane core ([`core`]), its local table ([`table`]),
//! its command language ([`command`]), its command flow as a sans-io state machine
//! ([`flow`]), the lines it shows ([`messages`], [`render`]), its crash journal
//! ([`session`]), and the thin tokio driver that ties them to sockets, the transfer
//! engine and the console ([`driver`], with its helper tasks in [`work`]). Why it stops is
//! a [`ClientError`].

pub mod driver;
pub mod error;
pub mod flow;
pub mod listing;
pub mod messages;
pub mod reach;
pub mod render;
pub mod session;
pub mod work;

pub use error::ClientError;
pub use fileapp_core::client::{command, core, link, table};
