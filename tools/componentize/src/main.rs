//! `componentize IN.wasm OUT.wasm`: wraps a core module built for `wasm32-unknown-unknown`
//! with `wit-bindgen` into a WebAssembly component. The component's imports and exports
//! come from the `component-type` custom sections that `wit-bindgen` embeds; imports the
//! module does not use are dropped, so a middleware ends up importing only what it calls.

use anyhow::{bail, Context, Result};
use wit_component::ComponentEncoder;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        bail!("usage: componentize IN.wasm OUT.wasm");
    };
    let module = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let component = ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .with_context(|| format!("{input}: no usable component-type metadata"))?
        .encode()
        .with_context(|| format!("{input}: cannot encode a component"))?;
    std::fs::write(output, component).with_context(|| format!("writing {output}"))?;
    Ok(())
}
