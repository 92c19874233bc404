//! The ledger: a host trace accounted for (every block attributed to a component and phase,
//! threads, sync objects, sites) and projected onto the ESP32's heaps. The lab, interop and
//! the soak read their figures from it; it measures nothing itself.

pub mod account;
pub mod projection;
