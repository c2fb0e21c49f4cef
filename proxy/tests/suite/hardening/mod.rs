//! Issue #15: each attack sent for real against a running Sluice and a real origin.
//! One module per area; every test here failed on the main before its fix.

mod bodies;
mod connections;
mod filters;
mod images;
mod operations;
mod paths;
