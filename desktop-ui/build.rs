//! Declares the app's own commands so that `capabilities/` can grant them one by one
//! (least privilege: a command not listed there cannot be called from the web view).

const COMMANDS: &[&str] = &[
    "remembered",
    "set_language",
    "set_notifications",
    "login",
    "logout",
    "board",
    "reload",
    "bump",
    "recall",
    "hand_over",
    "student_action",
    "stock",
    "stock_action",
    "menu",
    "update_item",
    "menu_edits",
    "summary",
    "status",
];

fn main() {
    tauri_build::try_build(
        tauri_build::Attributes::new()
            .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS)),
    )
    .expect("tauri build step");
}
