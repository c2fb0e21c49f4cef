//! Issue #15: each attack sent for real against a running Sluice and a real origin.
//! One module per area; every test here failed on the main before its fix.

mod common;

#[path = "hardening/kit.rs"]
mod kit;

#[path = "hardening/bodies.rs"]
mod bodies;
#[path = "hardening/connections.rs"]
mod connections;
#[path = "hardening/filters.rs"]
mod filters;
#[path = "hardening/images.rs"]
mod images;
#[path = "hardening/operations.rs"]
mod operations;
#[path = "hardening/paths.rs"]
mod paths;
