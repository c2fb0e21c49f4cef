//! Hardening tests: images (issue #15).
#![allow(unused_imports)]
use super::common::*;
