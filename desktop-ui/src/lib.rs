//! The staff desktop app: a Tauri v2 client of the box's staff HTTP API for counter and
//! kitchen terminals. The Rust side owns the API client (`client`), the event stream
//! (`events`), the kitchen display's state (`kitchen`), hand-over input (`pickup`) and
//! the remembered box (`settings`) and desktop notifications (`notify`); the web view in `dist/` only renders what the
//! `commands` return.

pub mod client;
pub mod commands;
pub mod error;
pub mod events;
pub mod kitchen;
pub mod notify;
pub mod pickup;
pub mod session;
pub mod settings;

use session::Shared;
use tauri::Manager;

/// Starts the app; returns when its window is closed.
pub fn run() {
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_notification::init())
        .setup(|app| {
            let config_dir = app.path().app_config_dir()?;
            let remembered = settings::load(&config_dir);
            let shared = Shared::new(config_dir, remembered);
            let stop = shared.shutdown.clone();
            app.manage(shared);
            tauri::async_runtime::spawn(commands::housekeeping(app.handle().clone(), stop));
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            commands::remembered,
            commands::set_language,
            commands::set_notifications,
            commands::login,
            commands::logout,
            commands::board,
            commands::reload,
            commands::bump,
            commands::recall,
            commands::hand_over,
            commands::student_action,
            commands::stock,
            commands::stock_action,
            commands::menu,
            commands::update_item,
            commands::menu_edits,
            commands::summary,
            commands::status,
        ])
        .build(tauri::generate_context!());
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            eprintln!("the staff app could not start: {e}");
            std::process::exit(1);
        }
    };
    app.run(|handle, event| {
        if let tauri::RunEvent::Exit = event {
            handle.state::<Shared>().shutdown.cancel();
        }
    });
}
