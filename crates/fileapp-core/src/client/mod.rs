//! The client's sans-io pieces: its control-plane core ([`core`]), its local copy of the
//! table ([`table`]) and its command language ([`command`]).

pub mod command;
pub mod core;
pub mod table;
