//! `cairn init`

use anyhow::Result;
use cairn_engine::Repository;
use cairn_engine::chunker::ChunkerParams;
use cairn_engine::config::{FORMAT_VERSION, InitOptions, MIN_FORMAT_VERSION};

use crate::common::{Global, parse_size, print_json, prompt_new};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// zstd compression level for data, -7 to 22 (0 = off)
    #[arg(long, default_value_t = 3, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-7..=22))]
    compression: i32,
    /// Target pack size in MiB (1 to 1024)
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pack_size_mib: u32,
    /// Smallest chunk (e.g. 256K); set once, every client of the repository cuts alike
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    chunk_min: Option<u64>,
    /// Average chunk (e.g. 1M)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    chunk_avg: Option<u64>,
    /// Largest chunk (e.g. 4M)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    chunk_max: Option<u64>,
    /// Create the repository append-only: whatever deletes or replaces
    /// (forget, prune, rewrite, repair index, repair packs, repair
    /// snapshots --forget, tag, hold, key remove and passwd, unlock
    /// --remove-all, config format-version) is refused (exit 13) until
    /// `cairn config append-only off`
    #[arg(long)]
    append_only: bool,
    /// Repository format version to write: 3 (the default) compresses small
    /// files together; 2 keeps the repository readable by cairn releases
    /// before it (small files compressed one by one, with a dictionary);
    /// 1 by releases before dictionaries
    #[arg(long, value_name = "N", default_value_t = FORMAT_VERSION,
          value_parser = clap::value_parser!(u32).range(MIN_FORMAT_VERSION as i64..=FORMAT_VERSION as i64))]
    format_version: u32,
}

/// The default chunker parameters with the sizes given replaced.
fn chunker(a: &Args) -> Result<ChunkerParams> {
    let mut p = ChunkerParams::default();
    for (v, field) in [
        (a.chunk_min, &mut p.min_size),
        (a.chunk_avg, &mut p.avg_size),
        (a.chunk_max, &mut p.max_size),
    ] {
        if let Some(v) = v {
            *field = u32::try_from(v)
                .map_err(|_| crate::exit::usage(format!("chunk size {v} is too large")))?;
        }
    }
    // FastCDC's bounds, and min <= avg <= max, with a message naming the options.
    p.validate().map_err(|_| {
        crate::exit::usage(format!(
            "invalid chunk sizes min {} avg {} max {}: need 64 B <= min <= 1 MiB, 256 B <= avg <= 4 MiB, 1 KiB <= max <= 16 MiB, min <= avg <= max, all even",
            p.min_size,
            p.avg_size,
            p.max_size
        ))
    })?;
    Ok(p)
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    // A wrong command line is found before anything is asked or created.
    let chunker = chunker(&a)?;
    let backend = g.backend()?;
    // Given as every other command takes it; asked twice on a terminal.
    // An empty CAIRN_PASSWORD means none, as for every command.
    let given = crate::common::env_password("CAIRN_PASSWORD").is_some_and(|p| !p.is_empty())
        || g.password_file.is_some()
        || g.password_command.is_some();
    let password = if let Some(f) = &g.password_file {
        crate::common::trimmed_new_password(g.password()?, &f.display().to_string())?
    } else if g.password_command.is_some() {
        crate::common::trimmed_new_password(g.password()?, "the password command")?
    } else if given {
        g.password()?
    } else {
        prompt_new(
            "password for the new repository",
            "set CAIRN_PASSWORD, CAIRN_PASSWORD_FILE or CAIRN_PASSWORD_COMMAND",
        )?
    };
    let opts = InitOptions {
        chunker,
        compression_level: a.compression,
        pack_size: a.pack_size_mib.saturating_mul(1 << 20),
        append_only: a.append_only,
        format_version: a.format_version,
        ..InitOptions::default()
    };
    crate::common::warn_insecure_kdf();
    let repo = Repository::init(backend.clone(), &password, &opts, &g.open_options())?;
    crate::common::warn_cache_unusable(&repo);
    if g.json {
        print_json(&serde_json::json!({
            "message_type": "initialized",
            "id": repo.config().id.to_hex(),
            "repository": backend.location(),
            "append_only": repo.config().append_only,
            "format_version": repo.config().version,
        }))?;
    } else if !g.quiet {
        crate::say!(
            "created cairn repository {} at {}",
            repo.config().id.short(),
            backend.location()
        );
        if repo.config().append_only {
            crate::say!(
                "The repository is append-only: forget, prune and other deletions are refused until `cairn config append-only off`."
            );
        }
        crate::say!("Keep the password safe: without it the data cannot be recovered.");
    }
    Ok(crate::exit::OK)
}
