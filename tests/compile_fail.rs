//! Compile-fail tests: misusing the balancer's types gives the crate's
//! own messages (`#[diagnostic::on_unimplemented]`), which say what to pass
//! instead. The `.stderr` files are the compiler's output on the pinned
//! toolchain; regenerate with `TRYBUILD=overwrite` after a toolchain bump.

#[test]
fn misuse_is_explained() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
