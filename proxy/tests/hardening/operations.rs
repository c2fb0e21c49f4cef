//! Hardening tests: operations (issue #15).
#![allow(unused_imports)]
use super::common::*;
