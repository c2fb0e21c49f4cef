//! Issue #16 tests: lifecycle (filled in by its branch).
