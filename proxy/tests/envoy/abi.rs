//! Issue #16 tests: abi (filled in by its branch).
