//! `cairn init`

use anyhow::Result;
use cairn_engine::Repository;
use cairn_engine::config::InitOptions;

use crate::common::{Global, print_json, prompt_new};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// zstd compression level for data (0 = off)
    #[arg(long, default_value_t = 3)]
    compression: i32,
    /// Target pack size in MiB
    #[arg(long, default_value_t = 16)]
    pack_size_mib: u32,
    /// Create the repository append-only: forget, prune, repair index, tag,
    /// hold and key removal are refused (exit 13) until `cairn config
    /// append-only off`
    #[arg(long)]
    append_only: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let backend = g.backend()?;
    let password = match std::env::var("CAIRN_PASSWORD") {
        Ok(p) => p.into_bytes(),
        Err(_) if g.password_file.is_some() || g.password_command.is_some() => g.password()?,
        Err(_) => prompt_new("password for the new repository")?,
    };
    let opts = InitOptions {
        compression_level: a.compression,
        pack_size: a.pack_size_mib.saturating_mul(1 << 20),
        append_only: a.append_only,
        ..InitOptions::default()
    };
    crate::common::warn_insecure_kdf();
    let repo = Repository::init(backend.clone(), &password, &opts, &g.open_options())?;
    if g.json {
        print_json(&serde_json::json!({
            "message_type": "initialized",
            "id": repo.config().id.to_hex(),
            "repository": backend.location(),
            "append_only": repo.config().append_only,
        }))?;
    } else {
        println!(
            "created cairn repository {} at {}",
            repo.config().id.short(),
            backend.location()
        );
        if repo.config().append_only {
            println!(
                "The repository is append-only: forget, prune and other deletions are refused until `cairn config append-only off`."
            );
        }
        println!("Keep the password safe: without it the data cannot be recovered.");
    }
    Ok(crate::exit::OK)
}
