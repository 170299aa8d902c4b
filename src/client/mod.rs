//! The client: its sans-io control-plane core ([`core`]), its local table ([`table`]),
//! its command language ([`command`]) and the tokio driver that ties them to sockets, the
//! transfer engine and the console ([`driver`]).

pub mod driver;
pub mod session;

pub use fileapp_core::client::{command, core, table};
