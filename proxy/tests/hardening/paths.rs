//! Hardening tests: paths (issue #15).
#![allow(unused_imports)]
use super::common::*;
