//! Hardening tests: bodies (issue #15).
#![allow(unused_imports)]
use super::common::*;
