// The app's texts in 简体中文 and English. `t(key, {name})` picks the current language and
// fills the named placeholders (`{name}`), as on the students' page.
"use strict";
const TEXTS = {
  zh: {
    app_title: "食堂员工端", box_address: "食堂终端地址", username: "用户名", password: "密码",
    log_in: "登录", log_out: "退出", desktop_notifications: "桌面通知", tab_kitchen: "后厨看板", tab_handover: "取餐核销",
    tab_stock: "库存", tab_summary: "今日汇总", tab_menu: "菜单管理",
    col_new: "新订单 / 已付款", col_preparing: "制作中", col_ready: "待取餐",
    keys_hint: "方向键选择订单，回车推进，Esc 撤回（4 秒内）；1/2/3 跳到列",
    unpaid: "未付款", overdue: "超时", bump_pay: "已收款 →", bump_start_preparing: "开始制作 →",
    bump_mark_ready: "出餐 →", recall: "撤回 ({s} 秒)", minutes: "{min} 分 {s} 秒",
    late: "比承诺晚 {min} 分钟", promised: "承诺 {time} 做好",
    pickup_prompt: "输入取餐号或扫描二维码", hand_over: "核销取餐",
    picked_up: "#{n} 已取餐：{items}", item: "菜品", remaining: "剩余", state: "状态",
    sold_out: "售完", on_sale: "在售", unlimited: "不限", mark_sold_out: "标记售完",
    mark_back: "恢复供应", restock: "补货", restock_count: "补货份数",
    print: "打印", orders: "订单数", revenue: "营业额", refunds: "退款", cancelled: "已取消",
    expired: "已过期", unclaimed: "未取餐", per_item: "按菜品", quantity: "份数", amount: "金额",
    name_zh: "中文名", name_en: "英文名", price_yuan: "价格（元）", quota: "每日限量",
    available: "上架", save: "保存", saved: "已保存", conflicts: "菜单冲突（两处同时修改）",
    conflict_in_effect: "生效中", keep_value: "采用此值", no_conflicts: "",
    lan_ok: "● 已连接终端", lan_down: "● 未连接终端", sync_off: "云同步：未配置",
    sync_ok: "云同步：已连接，待上传 {count}", sync_down: "云同步：断开，待上传 {count}（最早 {age} 秒前）",
    sync_alarm: "警告：{text}", sync_refused: "未接受云端的文档更改：{text}",
    new_order: "新订单 #{n}", nothing_here: "暂无", await_pickup: "等待取餐（在“取餐核销”交付）",
    e_pickup_not_found: "没有这个取餐号/二维码的订单", e_already_picked_up: "该订单已经取过餐了",
    e_not_ready: "订单还没做好", e_invalid_pickup_code: "这不是有效的取餐号或二维码",
    e_unauthorized: "用户名或密码错误", e_invalid_credentials: "用户名或密码错误",
    e_unreachable: "无法连接食堂终端", e_stale_version: "订单已被他人更新，已刷新",
    e_too_late_to_recall: "已发送，无法撤回", e_bad_address: "地址格式应为 http://主机:端口",
    e_forbidden: "没有权限", e_rate_limited: "尝试过于频繁，请稍后再试",
    student_heading: "学生账号", student_number: "学号", block_reason: "原因（封禁时必填）",
    cancel_unpaid: "取消其未付款订单", block: "封禁并取消未付款订单", unblock: "解除封禁",
    student_cancelled: "已取消 {number} 的 {n} 个未付款订单",
    student_blocked: "已封禁 {number}，取消了 {n} 个未付款订单",
    student_unblocked: "已解除 {number} 的封禁",
    e_bad_student_number: "学号只能是 1 到 32 位字母、数字或短横线",
    e_reason_required: "请填写封禁原因", e_not_found: "没有这个学号",
  },
  en: {
    app_title: "Canteen Staff", box_address: "Box address", username: "User name", password: "Password",
    log_in: "Log in", log_out: "Log out", desktop_notifications: "Desktop notifications", tab_kitchen: "Kitchen", tab_handover: "Hand-over",
    tab_stock: "Stock", tab_summary: "Day summary", tab_menu: "Menu",
    col_new: "New / paid", col_preparing: "Preparing", col_ready: "Ready",
    keys_hint: "Arrows select an order, Enter bumps it, Esc recalls (within 4 s); 1/2/3 jump to a column",
    unpaid: "unpaid", overdue: "overdue", bump_pay: "Paid →", bump_start_preparing: "Start →",
    bump_mark_ready: "Ready →", recall: "Recall ({s} s)", minutes: "{min} min {s} s",
    late: "{min} min late", promised: "promised {time}",
    pickup_prompt: "Type the pickup number or scan the QR code", hand_over: "Hand over",
    picked_up: "#{n} picked up: {items}", item: "Item", remaining: "Left", state: "State",
    sold_out: "sold out", on_sale: "on sale", unlimited: "unlimited", mark_sold_out: "Sold out",
    mark_back: "Back on sale", restock: "Restock", restock_count: "portions",
    print: "Print", orders: "Orders", revenue: "Revenue", refunds: "Refunds", cancelled: "Cancelled",
    expired: "Expired", unclaimed: "Unclaimed", per_item: "Per item", quantity: "Qty", amount: "Amount",
    name_zh: "Chinese name", name_en: "English name", price_yuan: "Price (yuan)", quota: "Daily quota",
    available: "Available", save: "Save", saved: "Saved", conflicts: "Menu conflicts (edited in two places at once)",
    conflict_in_effect: "in effect", keep_value: "Keep this", no_conflicts: "",
    lan_ok: "● box connected", lan_down: "● box not connected", sync_off: "cloud sync: not configured",
    sync_ok: "cloud sync: connected, {count} to upload", sync_down: "cloud sync: down, {count} to upload (oldest {age} s)",
    sync_alarm: "alarm: {text}", sync_refused: "document changes from the cloud refused: {text}",
    new_order: "New order #{n}", nothing_here: "nothing here", await_pickup: "waiting for pickup (hand over in Hand-over)",
    e_pickup_not_found: "No order with that pickup number or QR code", e_already_picked_up: "That order was already picked up",
    e_not_ready: "That order is not ready yet", e_invalid_pickup_code: "That is not a pickup number or QR code",
    e_unauthorized: "Wrong user name or password", e_invalid_credentials: "Wrong user name or password",
    e_unreachable: "Cannot reach the box", e_stale_version: "Someone else changed that order; reloaded",
    e_too_late_to_recall: "Already sent, too late to recall", e_bad_address: "The address looks like http://host:port",
    e_forbidden: "Not allowed", e_rate_limited: "Too many attempts; wait a moment",
    student_heading: "Student account", student_number: "Student number", block_reason: "Reason (needed to block)",
    cancel_unpaid: "Cancel their unpaid orders", block: "Block and cancel unpaid orders", unblock: "Unblock",
    student_cancelled: "Cancelled {n} unpaid orders of {number}",
    student_blocked: "Blocked {number}; cancelled {n} unpaid orders",
    student_unblocked: "{number} may order again",
    e_bad_student_number: "A student number is 1 to 32 letters, digits or dashes",
    e_reason_required: "Say why the student is blocked", e_not_found: "No student with that number",
  },
};
let LANG = "zh";
function t(key, vars = {}) {
  const s = (TEXTS[LANG] && TEXTS[LANG][key]) ?? TEXTS.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] === undefined ? m : String(vars[k])));
}
// Allergen tags as stored on the menu → words staff read at a glance.
const ALLERGENS = {
  zh: { peanut: "花生", soy: "大豆", gluten: "麸质", egg: "鸡蛋", milk: "牛奶", fish: "鱼",
        shellfish: "贝类", sesame: "芝麻", tree_nut: "坚果", celery: "芹菜", mustard: "芥末" },
  en: { tree_nut: "tree nuts" },
};
const allergenName = (tag) => (ALLERGENS[LANG] && ALLERGENS[LANG][tag]) || tag;
// A UiError from Rust → one sentence: ours when we know the code, else the box's.
function errorText(e) {
  if (e && typeof e === "object") {
    const code = e.code || e.kind;
    const known = TEXTS[LANG][`e_${code}`];
    return known ? known : (e.message || code);
  }
  return String(e);
}
