//! snapback's developer tasks (the bootc/xtask pattern): `cargo xtask gen --out DIR` writes the
//! man pages and shell completions that `tools/install` and the RPM install.

use std::path::PathBuf;

use anyhow::{bail, Result};

mod gen;

fn main() -> Result<()> {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    match args.as_slice() {
        [task, flag, dir] if task == "gen" && flag == "--out" => {
            for path in gen::generate(&PathBuf::from(dir))? {
                println!("{}", path.display());
            }
            Ok(())
        }
        _ => bail!("usage: xtask gen --out DIR   (man pages and shell completions)"),
    }
}
