//! The client's sans-io pieces: its control-plane core ([`core`]), the encrypted
//! channel it speaks through ([`link`]), its local copy of the table ([`table`]) and its
//! command language ([`command`]).

pub mod command;
pub mod core;
pub mod link;
pub mod table;
