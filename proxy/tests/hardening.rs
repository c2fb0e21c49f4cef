//! Issue #15: each attack sent for real against a running Sluice and a real origin.
//! One module per area; every test here failed on the main before its fix.

mod common;

#[path = "hardening/paths.rs"]
mod paths;
#[path = "hardening/images.rs"]
mod images;
#[path = "hardening/bodies.rs"]
mod bodies;
#[path = "hardening/filters.rs"]
mod filters;
#[path = "hardening/connections.rs"]
mod connections;
#[path = "hardening/operations.rs"]
mod operations;
