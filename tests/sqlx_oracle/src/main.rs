//! sqlx-oracle: what `sqlx::migrate::Migrator` does, from the command line.
//!
//!   sqlx-oracle list DIR              the migrations sqlx resolves from DIR (one JSON object a line)
//!   sqlx-oracle run DIR URL           Migrator::run
//!   sqlx-oracle undo DIR URL TARGET   Migrator::undo down to TARGET
//!   sqlx-oracle history URL           the _sqlx_migrations rows (one JSON object a line)
//!   sqlx-oracle hold-lock URL SECS    take the migration lock as Migrator does, print "locked", hold it
//!
//! Exit 0 on success; 1 with `error: <sqlx's message>` on stderr when sqlx refuses or fails; 2 on usage.
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{Connection, PgConnection};
use std::path::Path;
use std::process::ExitCode;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

async fn migrator(dir: &str) -> Result<Migrator, String> {
    Migrator::new(Path::new(dir)).await.map_err(|e| e.to_string())
}

async fn connect(url: &str) -> Result<PgConnection, String> {
    PgConnection::connect(url).await.map_err(|e| e.to_string())
}

async fn run(args: &[String]) -> Result<(), String> {
    match args {
        [cmd, dir] if cmd == "list" => {
            for m in migrator(dir).await?.iter() {
                println!(
                    "{{\"version\":{},\"description\":{},\"kind\":{},\"checksum\":\"{}\",\"no_tx\":{}}}",
                    m.version,
                    json_string(&m.description),
                    json_string(&format!("{:?}", m.migration_type)),
                    hex(&m.checksum),
                    m.no_tx
                );
            }
            Ok(())
        }
        [cmd, dir, url] if cmd == "run" => {
            let m = migrator(dir).await?;
            let mut conn = connect(url).await?;
            m.run(&mut conn).await.map_err(|e| e.to_string())
        }
        [cmd, dir, url, target] if cmd == "undo" => {
            let target: i64 = target.parse().map_err(|_| format!("bad target {target}"))?;
            let m = migrator(dir).await?;
            let mut conn = connect(url).await?;
            m.undo(&mut conn, target).await.map_err(|e| e.to_string())
        }
        [cmd, url] if cmd == "history" => {
            let mut conn = connect(url).await?;
            let rows: Vec<(i64, String, bool, Vec<u8>, i64)> = sqlx::query_as(
                "SELECT version, description, success, checksum, execution_time \
                 FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
            for (version, description, success, checksum, execution_time) in rows {
                println!(
                    "{{\"version\":{version},\"description\":{},\"success\":{success},\"checksum\":\"{}\",\"execution_time\":{execution_time}}}",
                    json_string(&description),
                    hex(&checksum)
                );
            }
            Ok(())
        }
        [cmd, url, secs] if cmd == "hold-lock" => {
            let secs: f64 = secs.parse().map_err(|_| format!("bad seconds {secs}"))?;
            let mut conn = connect(url).await?;
            conn.lock().await.map_err(|e| e.to_string())?;
            println!("locked");
            tokio::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
            conn.unlock().await.map_err(|e| e.to_string())
        }
        _ => Err("usage".into()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e == "usage" => {
            eprintln!("usage: sqlx-oracle list DIR | run DIR URL | undo DIR URL TARGET | history URL | hold-lock URL SECS");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
