// The students' ordering page. Plain JavaScript, no build step, no third party: the
// box serves it over the canteen Wi-Fi, with or without an uplink.
//
// Data flow: the menu comes from GET /api/menu (polled while visible), orders from the
// student API, and live changes from the event stream (/api/student/events), which
// triggers a reload of the order it names. Prices shown before placing are computed
// here for display only; once placed, the box's total is what the page shows. What an
// order allows next (`can_cancel`, `next_events`) and the hours in a `closed` refusal
// (`error.details`) come from the box too: the page never re-derives them.
//
// Style (shared with the staff app's web view): const/let, arrow functions for
// callbacks, named placeholders in the texts (`t(key, {name})`), money as integer fen.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = { session: 'canteen.session', lang: 'canteen.lang', cart: 'canteen.cart' };
  // Meals first, drinks last; a category not listed here goes in between, in menu order.
  const CATEGORY_RANK = { Noodles: 1, Rice: 2, Dumplings: 3, Soup: 8, Snacks: 7, Desserts: 8, Drinks: 9 };
  const MENU_POLL_MS = 30000;
  const BACKOFF_MAX_S = 30;
  const PLACE_RETRIES = 5;

  // ------------------------------------------------------------------ texts
  const T = {
    zh: {
      skip: '跳到主要内容', title: '食堂点餐', dismiss: '关闭', dismissLong: '关闭提示',
      loginTitle: '登录', loginHint: '用学号和 PIN 登录；今天之内都保持登录。', studentNumber: '学号',
      logIn: '登录', loggingIn: '正在登录…', menuTitle: '今日菜单', categories: '分类', loading: '加载中…',
      cartTitle: '购物车', cartEmpty: '购物车是空的。去菜单里选几样吧。', pickupTime: '取餐时间',
      payment: '付款方式', total: '合计', totalNote: '金额以食堂系统确认为准。', order: '订单',
      pickupNumber: '取餐号', progress: '进度', qrLabel: '取餐二维码',
      showAtCounter: '到取餐台出示取餐号或二维码。', items: '菜品', cancelOrder: '取消订单',
      cancelAsk: '确定取消这个订单吗？', cancelYes: '是的，取消', cancelNo: '保留订单', orderMore: '再点一些',
      ordersTitle: '今天的订单', ordersEmpty: '今天还没有订单。', loggedInAs: '已登录：', logOut: '退出登录',
      mainNav: '主导航', tabMenu: '菜单', tabCart: '购物车', tabOrders: '订单', quantity: '数量',
      fewer: '减少', more: '增加', back: '返回', add: '加入', addLong: '加入购物车：{name}',
      addToCart: '加入购物车 · {price}', soldOut: '已售罄', unavailable: '今日不供应', fewLeft: '仅剩少量',
      inCart: '购物车里 {n} 份', allergens: '过敏原', open: '营业中', closed: '未营业',
      closedNote: '食堂现在不接受下单。你可以先看看菜单。', closedHours: '食堂现在不接受下单（下单时间 {from}–{to}）。',
      closedToday: '食堂今天不营业，不接受下单。',
      chooseN: '选 {n} 项', chooseUpTo: '最多选 {n} 项', chooseBetween: '选 {min}–{max} 项', optional: '可选',
      noChoice: '不选', needChoice: '“{group}”请至少选 {n} 项。', tooMany: '“{group}”最多选 {n} 项。',
      remove: '删除', removeLong: '从购物车删除：{name}', qtyOf: '{name} 的数量', place: '下单 · {price}',
      placing: '正在下单…', payCounter: '到柜台付款', payCard: '校园卡',
      slotFull: '已满', slotLeft: '剩 {n} 个名额', allSlotsFull: '所有取餐时间都已约满。',
      chooseSlot: '请选择取餐时间。', slotCannot: '厨房来不及', slotNext: '厨房最早能赶上 {time} 的时段。',
      etaNow: '现在下单，预计 {time} 左右可以取餐。', readyAround: '预计 {time} 左右做好',
      readyLate: '预计 {time} 左右做好（原定 {promised}，厨房比较忙）',
      st_placed: '已下单', st_paid: '已付款', st_preparing: '制作中', st_ready: '可以取餐了！',
      st_picked_up: '已取餐', st_cancelled: '已取消', st_expired: '未付款，已过期', st_unclaimed: '未取餐',
      step_placed: '下单', step_paid: '付款', step_preparing: '制作', step_ready: '取餐',
      payCounterHow: '请到柜台付款，并出示取餐号 {n}。应付 {price}。',
      payCardHow: '请用校园卡付款（刷卡机或校园卡 App），金额 {price}。校园卡系统会自动确认，本页收到付款后会自动更新，无需其他操作。',
      payBy: '请在 {time} 前付款，否则订单会自动取消。', placedAt: '下单时间 {time}',
      cartCount: '{n} 件 · {price}', activeOrder: '订单 {n}：{state} — 查看',
      ordered: '已下单！取餐号 {n}。', nowReady: '订单 {n} 可以取餐了！', nowState: '订单 {n}：{state}',
      cancelled: '订单已取消。',
      errCredentials: '学号或 PIN 不对。', errSession: '登录已过期，请重新登录。',
      errRate: '尝试太频繁了。请 {s} 秒后再试。', errRateShort: '请 {s} 秒后再试。',
      errBusy: '食堂系统正忙，{s} 秒后自动重试…',
      errSoldOut: '“{name}”刚刚售罄。请从购物车删除它（或换一道菜），然后再下单。',
      errNotEnough: '“{name}”只剩少量了。请减少数量，然后再下单。',
      errTooManyPortions: '每单最多 {max} 份“{name}”，好让每个人都吃得上。请减少数量。',
      errTooManyUnpaid: '你已有 {max} 个未付款的订单。请先付款或取消一个，再下新单。',
      errBlocked: '食堂已暂停你的账号在这里下单：{msg}',
      errUnavailable: '“{name}”今天不再供应。请从购物车删除它，然后再下单。',
      errClosed: '食堂现在不接受下单。', errOptions: '购物车里有选项和菜单对不上：{msg}。请检查后再下单。',
      errOffline: '连不上食堂的服务器。请确认已连接食堂 Wi‑Fi。{s} 秒后重试…',
      errOfflinePlace: '连不上食堂的服务器，{s} 秒后用同一个订单重试（不会重复下单）…',
      errOfflineGiveUp: '还是连不上食堂的服务器。请检查 Wi‑Fi 后再点“下单”——不会重复下单。',
      errKitchen: '厨房已经开始做了，不能再取消。', errCannotCancel: '这个订单现在不能取消。',
      errOfflineLogin: '连不上食堂的服务器。请确认已连接食堂 Wi‑Fi，然后再试。',
      errGeneric: '出错了：{msg}', errFillLogin: '请输入学号和 PIN。', reconnected: '已重新连上食堂服务器。',
      categoryNames: { Noodles: '面食', Rice: '米饭', Dumplings: '饺子', Soup: '汤', Drinks: '饮品', Snacks: '小吃', Other: '其他' },
      allergenNames: { gluten: '麸质', soy: '大豆', peanut: '花生', egg: '蛋', milk: '奶', dairy: '奶', fish: '鱼', shellfish: '贝类', sesame: '芝麻', nuts: '坚果', 'tree_nuts': '坚果', wheat: '小麦', celery: '芹菜', mustard: '芥末' }
    },
    en: {
      skip: 'Skip to content', title: 'Canteen', dismiss: 'Close', dismissLong: 'Close this message',
      loginTitle: 'Log in', loginHint: 'Use your student number and PIN; you stay logged in for the day.', studentNumber: 'Student number',
      logIn: 'Log in', loggingIn: 'Logging in…', menuTitle: "Today's menu", categories: 'Categories', loading: 'Loading…',
      cartTitle: 'Cart', cartEmpty: 'Your cart is empty. Pick something from the menu.', pickupTime: 'Pickup time',
      payment: 'Payment', total: 'Total', totalNote: 'The canteen box confirms the final amount.', order: 'Order',
      pickupNumber: 'Pickup number', progress: 'Progress', qrLabel: 'Pickup QR code',
      showAtCounter: 'Show the number or the QR code at the counter.', items: 'Items', cancelOrder: 'Cancel order',
      cancelAsk: 'Cancel this order?', cancelYes: 'Yes, cancel it', cancelNo: 'Keep the order', orderMore: 'Order more',
      ordersTitle: "Today's orders", ordersEmpty: 'No orders yet today.', loggedInAs: 'Logged in as', logOut: 'Log out',
      mainNav: 'Main', tabMenu: 'Menu', tabCart: 'Cart', tabOrders: 'Orders', quantity: 'Quantity',
      fewer: 'Fewer', more: 'More', back: 'Back', add: 'Add', addLong: 'Add {name} to the cart',
      addToCart: 'Add to cart · {price}', soldOut: 'Sold out', unavailable: 'Not today', fewLeft: 'Only a few left',
      inCart: '{n} in cart', allergens: 'Allergens', open: 'Open', closed: 'Closed',
      closedNote: 'The canteen is not taking orders now. You can still look at the menu.', closedHours: 'The canteen is not taking orders now (orders from {from} to {to}).',
      closedToday: 'The canteen is closed today: no orders.',
      chooseN: 'choose {n}', chooseUpTo: 'up to {n}', chooseBetween: 'choose {min}–{max}', optional: 'optional',
      noChoice: 'None', needChoice: 'Choose at least {n} for “{group}”.', tooMany: 'Choose at most {n} for “{group}”.',
      remove: 'Remove', removeLong: 'Remove {name} from the cart', qtyOf: 'Quantity of {name}', place: 'Place order · {price}',
      placing: 'Placing your order…', payCounter: 'Pay at the counter', payCard: 'Campus card',
      slotFull: 'full', slotLeft: '{n} left', allSlotsFull: 'Every pickup time is full.',
      chooseSlot: 'Choose a pickup time.', slotCannot: 'the kitchen cannot make it', slotNext: 'The earliest the kitchen can meet starts at {time}.',
      etaNow: 'Order now and it should be ready around {time}.', readyAround: 'Ready around {time}',
      readyLate: 'Ready around {time} (promised {promised}; the kitchen is busy)',
      st_placed: 'Placed', st_paid: 'Paid', st_preparing: 'Being prepared', st_ready: 'Ready for pickup!',
      st_picked_up: 'Picked up', st_cancelled: 'Cancelled', st_expired: 'Expired (not paid)', st_unclaimed: 'Not picked up',
      step_placed: 'Placed', step_paid: 'Paid', step_preparing: 'Cooking', step_ready: 'Ready',
      payCounterHow: 'Pay at the counter and show your number, {n}. Amount: {price}.',
      payCardHow: 'Pay {price} with your campus card (card reader or campus-card app). The campus-card system confirms by itself; this page updates when the payment arrives, nothing else to do here.',
      payBy: 'Pay by {time}, or the order is cancelled.', placedAt: 'Placed at {time}',
      cartCount: '{n} · {price}', activeOrder: 'Order {n}: {state} — view',
      ordered: 'Order placed! Your number is {n}.', nowReady: 'Order {n} is ready for pickup!', nowState: 'Order {n}: {state}',
      cancelled: 'The order is cancelled.',
      errCredentials: 'Wrong student number or PIN.', errSession: 'Your session has ended. Please log in again.',
      errRate: 'Too many tries. Try again in {s} s.', errRateShort: 'Try again in {s} s.',
      errBusy: 'The canteen box is busy; trying again in {s} s…',
      errSoldOut: '“{name}” just sold out. Remove it from your cart (or pick another dish), then place the order again.',
      errNotEnough: 'Only a few “{name}” are left. Lower the quantity, then place the order again.',
      errTooManyPortions: 'At most {max} “{name}” per order, so everyone gets some. Lower the quantity.',
      errTooManyUnpaid: 'You already have {max} unpaid orders. Pay for or cancel one before ordering again.',
      errBlocked: 'The canteen has stopped this account ordering here: {msg}',
      errUnavailable: '“{name}” is off the menu for today. Remove it from your cart, then place the order again.',
      errClosed: 'The canteen is not taking orders now.', errOptions: 'Something in your cart no longer matches the menu: {msg}. Please check the cart.',
      errOffline: "Can't reach the canteen box. Are you on the canteen Wi‑Fi? Retrying in {s} s…",
      errOfflinePlace: "Can't reach the canteen box; retrying the same order in {s} s (it won't be placed twice)…",
      errOfflineGiveUp: "Still can't reach the canteen box. Check the Wi‑Fi, then tap “Place order” again: it won't be placed twice.",
      errKitchen: 'The kitchen has already started on it, so it can no longer be cancelled.', errCannotCancel: 'This order can no longer be cancelled.',
      errOfflineLogin: "Can't reach the canteen box. Are you on the canteen Wi‑Fi? Then try again.",
      errGeneric: 'Something went wrong: {msg}', errFillLogin: 'Enter your student number and PIN.', reconnected: 'Connected to the canteen box again.',
      categoryNames: {},
      allergenNames: {}
    }
  };


  let lang = pickLang();
  function pickLang() {
    const saved = store('get', KEY.lang);
    if (saved === 'zh' || saved === 'en') return saved;
    const nav = (navigator.languages && navigator.languages[0]) || navigator.language || '';
    return /^zh/i.test(nav) ? 'zh' : 'en';
  }
  // The text `key` in the current language, its named placeholders ({name}) filled from `vars`.
  function t(key, vars) {
    let s = T[lang][key];
    if (s === undefined) s = T.en[key] || key;
    if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] === undefined ? m : vars[k]));
    return s;
  }
  const name = (x) => (lang === 'zh' ? (x.name_zh || x.name_en) : (x.name_en || x.name_zh));
  const otherName = (x) => (lang === 'zh' ? x.name_en : x.name_zh);
  const category = (c) => T[lang].categoryNames[c] || c;
  const allergen = (a) => {
    const k = String(a).toLowerCase();
    return T[lang].allergenNames[k] || (k.charAt(0).toUpperCase() + k.slice(1).replace(/_/g, ' '));
  };

  // ------------------------------------------------------------------ helpers
  function store(op, key, value) {
    try {
      if (op === 'get') return localStorage.getItem(key);
      if (op === 'set') localStorage.setItem(key, value);
      if (op === 'del') localStorage.removeItem(key);
    } catch (e) { /* private mode: the page still works, it just forgets */ }
    return null;
  }
  function readJson(key) { try { return JSON.parse(store('get', key) || 'null'); } catch (e) { return null; } }
  // Integer fen as yuan, with integer arithmetic only: "¥12.50", "−¥0.30" (the staff
  // app's web view has the same helper).
  const yuan = (fen, symbol = '¥') => {
    const n = Math.round(Number(fen) || 0);
    const a = Math.abs(n);
    return `${n < 0 ? '−' : ''}${symbol}${Math.trunc(a / 100)}.${String(a % 100).padStart(2, '0')}`;
  };
  const delta = (fen) => (fen > 0 ? `+${yuan(fen)}` : fen < 0 ? yuan(fen) : '');
  function el(tag, attrs, kids) {
    const e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach((k) => {
      const v = attrs[k];
      if (v === undefined || v === null || v === false) return;
      if (k === 'text') e.textContent = v;
      else if (k === 'on') Object.keys(v).forEach((ev) => e.addEventListener(ev, v[ev]));
      else if (k in e && typeof v !== 'string') e[k] = v;
      else e.setAttribute(k, v === true ? '' : v);
    });
    (kids || []).forEach((c) => { if (c) e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c); });
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  // Re-rendering replaces nodes; keep keyboard and screen-reader focus on the same control.
  function keepFocus(render) {
    const a = document.activeElement, key = a && a.getAttribute && a.getAttribute('data-focus');
    render();
    if (!key) return;
    const again = document.querySelector(`[data-focus="${key.replace(/["\\]/g, '')}"]`);
    if (again && again !== document.activeElement) again.focus({ preventScroll: true });
  }
  function uuid() {
    if (window.crypto && crypto.randomUUID) { try { return crypto.randomUUID(); } catch (e) { /* insecure context */ } }
    const b = new Uint8Array(16);
    if (window.crypto && crypto.getRandomValues) crypto.getRandomValues(b);
    else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => (x + 256).toString(16).slice(1)).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  function clock(iso) {
    const d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    const opts = { hour: '2-digit', minute: '2-digit', hour12: false };
    if (state.menu && state.menu.time_zone) opts.timeZone = state.menu.time_zone;
    try { return d.toLocaleTimeString(lang === 'zh' ? 'zh-CN' : 'en-GB', opts); } catch (e) {
      delete opts.timeZone;
      return d.toLocaleTimeString(lang === 'zh' ? 'zh-CN' : 'en-GB', opts);
    }
  }
  // A slot time may be a full timestamp or just "11:30".
  const slotTime = (s) => (/T/.test(String(s)) ? clock(s) : String(s));
  const backoff = (attempt) => Math.min(BACKOFF_MAX_S, Math.pow(2, attempt)) * (0.8 + Math.random() * 0.4);

  // ------------------------------------------------------------------ state
  const state = {
    session: readJson(KEY.session),
    menu: null,
    items: {},          // id -> menu item
    cart: [],           // [{key, item_id, quantity, options:[{group, choice}]}]
    problems: {},       // item_id -> message key (sold out etc.), from the last placement
    pay: null,
    slot: null,
    checkout: null,     // {key, body}: one Idempotency-Key per distinct checkout
    placing: false,
    orders: [],         // today's, newest first
    current: null,      // order id shown in the order view
    view: 'login',
    qrFor: null,
    events: null,
    eventsAttempt: 0,
    offline: false
  };

  // ------------------------------------------------------------------ messages
  let alertTimer = null;
  function say(text) {
    // Polite announcement for screen readers; visual feedback is in the page itself.
    const s = $('status'); s.textContent = ''; setTimeout(() => { s.textContent = text; }, 30);
  }
  function alertMsg(text) {
    clearInterval(alertTimer); alertTimer = null;
    $('alert').textContent = text || '';
  }
  // Shows `make(s)` counting s down to 0 each second, then calls done().
  function countdown(seconds, make, done) {
    clearInterval(alertTimer);
    let s = Math.max(1, Math.ceil(seconds));
    $('alert').textContent = make(s);
    alertTimer = setInterval(() => {
      s -= 1;
      if (s <= 0) { clearInterval(alertTimer); alertTimer = null; if (done) done(); return; }
      $('alert').textContent = make(s);
    }, 1000);
  }
  let netTimer = null;
  function netDown(seconds, retry) {
    state.offline = true;
    const box = $('net');
    let s = Math.max(1, Math.round(seconds));
    box.hidden = false;
    box.textContent = t('errOffline', { s });
    clearInterval(netTimer);
    netTimer = setInterval(() => {
      s -= 1;
      if (s <= 0) { clearInterval(netTimer); netTimer = null; retry(); return; }
      box.textContent = t('errOffline', { s });
    }, 1000);
  }
  function netUp() {
    if (state.offline) say(t('reconnected'));
    state.offline = false;
    clearInterval(netTimer); netTimer = null;
    $('net').hidden = true;
  }

  // ------------------------------------------------------------------ API
  class NetError extends Error {
    constructor() { super('the canteen box is unreachable'); this.name = 'NetError'; }
  }
  // Resolves to {status, body, retryAfter}; rejects with NetError when the box is unreachable.
  function api(method, path, body, headers) {
    const h = { Accept: 'application/json' };
    if (body !== undefined) h['Content-Type'] = 'application/json';
    if (state.session && state.session.token) h.Authorization = `Bearer ${state.session.token}`;
    Object.keys(headers || {}).forEach((k) => { h[k] = headers[k]; });
    const ctl = window.AbortController ? new AbortController() : null;
    const timer = ctl && setTimeout(() => ctl.abort(), 15000);
    return fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body), signal: ctl && ctl.signal, cache: 'no-store' })
      .then((res) => {
        clearTimeout(timer);
        const ra = parseInt(res.headers.get('Retry-After') || '', 10);
        return res.text().then((text) => {
          let json = null;
          try { json = text ? JSON.parse(text) : null; } catch (e) { json = { raw: text }; }
          const r = { status: res.status, body: json, retryAfter: isNaN(ra) ? null : ra, code: json && json.error ? json.error.code : null };
          if (res.status === 401 && state.session && path.indexOf('/api/student/login') !== 0) {
            expireSession();
          }
          return r;
        });
      }, () => { clearTimeout(timer); throw new NetError(); });
  }
  function errorText(r) {
    const e = r.body && r.body.error;
    return t('errGeneric', { msg: e ? e.message : `HTTP ${r.status}` });
  }
  function expireSession() {
    logout(true);
    alertMsg(t('errSession'));
  }

  // ------------------------------------------------------------------ language
  function applyLang() {
    document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
    document.title = lang === 'zh' ? '食堂点餐 · Canteen' : 'Canteen · 食堂点餐';
    document.querySelectorAll('[data-i18n]').forEach((n) => { n.textContent = t(n.getAttribute('data-i18n')); });
    document.querySelectorAll('[data-i18n-aria]').forEach((n) => { n.setAttribute('aria-label', t(n.getAttribute('data-i18n-aria'))); });
    const b = $('lang-toggle');
    b.textContent = lang === 'zh' ? 'English' : '简体中文';
    b.setAttribute('lang', lang === 'zh' ? 'en' : 'zh-CN');
    b.setAttribute('aria-label', lang === 'zh' ? 'Switch to English' : '切换到简体中文');
    renderAll();
  }

  // ------------------------------------------------------------------ views
  function show(view, focus) {
    if (!state.session) view = 'login';
    state.view = view;
    ['login', 'menu', 'cart', 'order', 'orders'].forEach((v) => { $(`view-${v}`).hidden = v !== view; });
    $('tabs').hidden = view === 'login';
    document.querySelectorAll('#tabs button').forEach((b) => {
      if (b.getAttribute('data-view') === view) b.setAttribute('aria-current', 'page'); else b.removeAttribute('aria-current');
    });
    if (view === 'cart') renderCart();
    if (view === 'orders') renderOrders();
    if (view === 'order') renderOrder();
    if (focus !== false) {
      const h = $(`view-${view}`).querySelector('h2');
      if (h) { h.setAttribute('tabindex', '-1'); h.focus({ preventScroll: true }); }
      window.scrollTo(0, 0);
    }
  }
  function renderAll() {
    renderMenu(); renderCartSummary();
    if (state.view === 'cart') renderCart();
    if (state.view === 'order') renderOrder();
    if (state.view === 'orders') renderOrders();
    renderActiveOrder();
  }

  // ------------------------------------------------------------------ login
  function login(ev) {
    ev.preventDefault();
    const num = $('login-number').value.trim(), pin = $('login-pin').value;
    if (!num || !pin) { alertMsg(t('errFillLogin')); ($('login-number').value ? $('login-pin') : $('login-number')).focus(); return; }
    const btn = $('login-submit');
    btn.disabled = true; btn.textContent = t('loggingIn');
    alertMsg('');
    api('POST', '/api/student/login', { student_number: num, pin }).then((r) => {
      if (r.status === 200) {
        state.session = { token: r.body.token, expires_at: r.body.expires_at, name: r.body.name, account_id: r.body.account_id };
        store('set', KEY.session, JSON.stringify(state.session));
        $('login-pin').value = '';
        afterLogin();
      } else if (r.code === 'rate_limited') {
        countdown(r.retryAfter || 60, (s) => t('errRate', { s }), () => alertMsg(''));
      } else if (r.status === 401) {
        alertMsg(t('errCredentials')); $('login-pin').focus();
      } else {
        alertMsg(errorText(r));
      }
    }, () => {
      alertMsg(t('errOfflineLogin'));
    }).then(() => { btn.disabled = false; btn.textContent = t('logIn'); });
  }
  function sessionValid() {
    const s = state.session;
    return !!(s && s.token && (!s.expires_at || new Date(s.expires_at).getTime() > Date.now()));
  }
  function afterLogin() {
    $('who').textContent = state.session.name || '';
    show('menu');
    loadMenu();
    loadOrders();
    connectEvents();
  }
  function logout(quiet) {
    state.session = null;
    store('del', KEY.session);
    if (state.events) { state.events.close(); state.events = null; }
    state.orders = []; state.current = null; state.qrFor = null;
    show('login');
    if (!quiet) alertMsg('');
    $('login-number').focus();
  }

  // ------------------------------------------------------------------ menu
  let menuAttempt = 0, menuTimer = null;
  function loadMenu() {
    clearTimeout(menuTimer);
    return api('GET', '/api/menu').then((r) => {
      if (r.status !== 200) throw new NetError();
      netUp(); menuAttempt = 0;
      state.menu = r.body;
      state.items = {};
      (r.body.items || []).forEach((it) => { state.items[it.id] = it; });
      if (!state.pay || (r.body.payment_modes || []).indexOf(state.pay) < 0) state.pay = (r.body.payment_modes || [])[0] || null;
      loadCart();
      renderAll();
      menuTimer = setTimeout(pollMenu, MENU_POLL_MS);
    }).catch(() => {
      netDown(backoff(menuAttempt++), loadMenu);
    });
  }
  function pollMenu() {
    if (document.visibilityState === 'hidden' || !state.session) { menuTimer = setTimeout(pollMenu, MENU_POLL_MS); return; }
    loadMenu();
  }
  const available = (it) => it && it.available !== false && !it.sold_out;
  function renderMenu() { keepFocus(drawMenu); }
  function drawMenu() {
    const list = $('menu-list'), nav = $('cat-nav'), m = state.menu;
    const open = !!(m && m.open);
    const pill = $('open-state');
    pill.hidden = !m;
    if (m) { pill.textContent = open ? t('open') : t('closed'); pill.className = `pill ${open ? 'ok' : 'no'}`; }
    const ann = $('announcement');
    ann.hidden = !(m && m.announcement);
    ann.textContent = (m && m.announcement) || '';
    $('closed-note').hidden = !m || open;
    $('closed-note').textContent = t('closedNote');
    if (!m) return;
    list.setAttribute('aria-busy', 'false');
    clear(list); clear(nav);
    const cats = [], byCat = {};
    m.items.forEach((it) => {
      if (!byCat[it.category]) { byCat[it.category] = []; cats.push(it.category); }
      byCat[it.category].push(it);
    });
    const rank = (c) => CATEGORY_RANK[c] || 5;
    const ordered = cats.map((c, i) => [c, i])
      .sort((a, b) => rank(a[0]) - rank(b[0]) || a[1] - b[1])
      .map((x) => x[0]);
    const inCart = {};
    state.cart.forEach((l) => { inCart[l.item_id] = (inCart[l.item_id] || 0) + l.quantity; });
    ordered.forEach((c, i) => {
      const id = `cat-${i}`;
      nav.appendChild(el('a', { href: `#${id}`, text: category(c) }));
      const sec = el('section', { 'class': 'category', 'aria-labelledby': `${id}-h`, id }, [el('h3', { id: `${id}-h`, text: category(c) })]);
      byCat[c].forEach((it) => sec.appendChild(menuItem(it, inCart[it.id] || 0)));
      list.appendChild(sec);
    });
  }
  function menuItem(it, count) {
    const out = it.available === false, sold = !!it.sold_out;
    const badges = el('p', { 'class': 'badges' });
    if (out) badges.appendChild(el('span', { 'class': 'badge off', text: t('unavailable') }));
    else if (sold) badges.appendChild(el('span', { 'class': 'badge sold', 'data-testid': 'sold-out', text: t('soldOut') }));
    else if (it.few_left) badges.appendChild(el('span', { 'class': 'badge few', 'data-testid': 'few-left', text: t('fewLeft') }));
    if (count) badges.appendChild(el('span', { 'class': 'badge cart', text: t('inCart', { n: count }) }));
    let tags = null;
    if (it.allergens && it.allergens.length) {
      tags = el('ul', { 'class': 'tags', 'aria-label': t('allergens') });
      it.allergens.forEach((a) => tags.appendChild(el('li', { text: allergen(a) })));
    }
    const nm = name(it);
    const alt = otherName(it);
    return el('article', { 'class': `item${out || sold ? ' dim' : ''}`, id: `item-${it.id}`, 'data-testid': 'menu-item' }, [
      el('div', { 'class': 'item-main' }, [
        el('h4', { 'class': 'name', text: nm }),
        alt && alt !== nm ? el('p', { 'class': 'alt', lang: lang === 'zh' ? 'en' : 'zh-CN', text: alt }) : null,
        el('p', { 'class': 'price', text: yuan(it.price_fen) }),
        tags, badges.childNodes.length ? badges : null
      ]),
      el('button', {
        type: 'button', 'class': 'add', 'data-testid': 'add', 'data-focus': `add-${it.id}`, 'aria-label': t('addLong', { name: nm }),
        disabled: out || sold, text: `+ ${t('add')}`,
        on: { click: () => openOptions(it) }
      })
    ]);
  }

  // ------------------------------------------------------------------ options dialog
  let dialogItem = null;
  function openOptions(it) {
    if (!(it.option_groups || []).length) {
      // Nothing to choose: one tap adds it (the cart changes the quantity).
      addToCart(it, [], 1);
      say(`${t('inCart', { n: cartCount() })} · ${name(it)}`);
      return;
    }
    dialogItem = it;
    $('opt-title').textContent = name(it);
    $('opt-qty').value = 1;
    $('opt-error').textContent = '';
    const box = clear($('opt-groups'));
    (it.option_groups || []).forEach((g) => {
      const single = g.max_choices <= 1;
      const rule = single ? (g.min_choices >= 1 ? t('chooseN', { n: 1 }) : t('optional'))
        : g.min_choices === g.max_choices ? t('chooseN', { n: g.max_choices })
        : g.min_choices > 0 ? t('chooseBetween', { min: g.min_choices, max: g.max_choices }) : t('chooseUpTo', { n: g.max_choices });
      const fs = el('fieldset', { 'class': 'group', 'data-group': g.id }, [
        el('legend', {}, [`${name(g)} `, el('span', { 'class': 'muted small', text: `(${rule})` })])
      ]);
      const choices = g.choices.slice();
      if (single && g.min_choices < 1) choices.unshift({ id: '', name_zh: t('noChoice'), name_en: t('noChoice'), price_delta_fen: 0 });
      choices.forEach((c, i) => {
        const id = `opt-${g.id}-${c.id || 'none'}`;
        const input = el('input', {
          type: single ? 'radio' : 'checkbox', name: `g-${g.id}`, value: c.id, id,
          'data-group': g.id, 'data-choice': c.id, checked: single && i === 0,
          on: { change: () => { limitGroup(fs, g); updateDialogPrice(); } }
        });
        fs.appendChild(el('label', { 'for': id, 'class': 'choice' }, [input, el('span', { text: name(c) }), c.price_delta_fen ? el('span', { 'class': 'delta', text: delta(c.price_delta_fen) }) : null]));
      });
      box.appendChild(fs);
    });
    updateDialogPrice();
    const d = $('opt-dialog');
    if (d.showModal) d.showModal(); else d.setAttribute('open', '');
    const first = box.querySelector('input') || $('opt-add');
    first.focus();
  }
  function limitGroup(fs, g) {
    if (g.max_choices <= 1) return;
    const n = fs.querySelectorAll('input:checked').length;
    fs.querySelectorAll('input').forEach((b) => { b.disabled = !b.checked && n >= g.max_choices; });
  }
  function dialogChoices() {
    const opts = [];
    $('opt-groups').querySelectorAll('input:checked').forEach((i) => {
      if (i.value) opts.push({ group: i.getAttribute('data-group'), choice: i.value });
    });
    return opts;
  }
  function dialogQty() {
    const q = parseInt($('opt-qty').value, 10);
    return isNaN(q) ? 1 : Math.max(1, Math.min(20, q));
  }
  function updateDialogPrice() {
    if (!dialogItem) return;
    const unit = unitPrice(dialogItem, dialogChoices());
    $('opt-price').textContent = yuan(unit);
    $('opt-add').textContent = t('addToCart', { price: yuan(unit * dialogQty()) });
  }
  function validateOptions(it, opts) {
    for (const g of it.option_groups || []) {
      const n = opts.filter((o) => o.group === g.id).length;
      const min = Math.max(g.min_choices || 0, g.required ? 1 : 0);
      if (n < min) return t('needChoice', { group: name(g), n: min });
      if (n > g.max_choices) return t('tooMany', { group: name(g), n: g.max_choices });
    }
    return null;
  }
  function addFromDialog(ev) {
    ev.preventDefault();
    const it = dialogItem, opts = dialogChoices();
    const problem = validateOptions(it, opts);
    if (problem) { $('opt-error').textContent = problem; return; }
    addToCart(it, opts, dialogQty());
    closeDialog();
    say(`${t('inCart', { n: cartCount() })} · ${name(it)}`);
  }
  function closeDialog() {
    const d = $('opt-dialog');
    if (d.close) { if (d.open) d.close(); } else d.removeAttribute('open');
    const back = dialogItem && document.querySelector(`#item-${CSS.escape(dialogItem.id)} .add`);
    dialogItem = null;
    if (back) back.focus();
  }

  // ------------------------------------------------------------------ cart
  function unitPrice(it, opts) {
    let p = it.price_fen;
    opts.forEach((o) => {
      (it.option_groups || []).forEach((g) => {
        if (g.id !== o.group) return;
        g.choices.forEach((c) => { if (c.id === o.choice) p += c.price_delta_fen || 0; });
      });
    });
    return p;
  }
  const lineKey = (itemId, opts) => `${itemId}|${opts.map((o) => `${o.group}=${o.choice}`).sort().join(',')}`;
  function addToCart(it, opts, qty) {
    const key = lineKey(it.id, opts);
    const line = state.cart.find((l) => l.key === key);
    if (line) line.quantity = Math.min(20, line.quantity + qty);
    else state.cart.push({ key, item_id: it.id, quantity: qty, options: opts });
    delete state.problems[it.id];
    cartChanged();
  }
  function cartChanged() {
    saveCart();
    renderCartSummary();
    renderMenu();
    if (state.view === 'cart') renderCart();
  }
  const cartCount = () => state.cart.reduce((n, l) => n + l.quantity, 0);
  function cartTotal() {
    return state.cart.reduce((sum, l) => {
      const it = state.items[l.item_id];
      return sum + (it ? unitPrice(it, l.options) * l.quantity : 0);
    }, 0);
  }
  function saveCart() {
    store('set', KEY.cart, JSON.stringify({ day: state.menu && state.menu.service_day, lines: state.cart }));
  }
  function loadCart() {
    if (state.cart.length) return;
    const saved = readJson(KEY.cart);
    if (saved && saved.day === state.menu.service_day && Array.isArray(saved.lines)) {
      state.cart = saved.lines.filter((l) => state.items[l.item_id]);
    }
  }
  function renderCartSummary() {
    const n = cartCount();
    $('cart-summary').textContent = n ? t('cartCount', { n, price: yuan(cartTotal()) }) : '';
  }
  function lineProblem(l) {
    const it = state.items[l.item_id];
    if (state.problems[l.item_id]) return state.problems[l.item_id];
    if (!it || it.available === false) return t('unavailable');
    if (it.sold_out) return t('soldOut');
    return null;
  }
  function renderCart() { keepFocus(drawCart); }
  function drawCart() {
    const ul = clear($('cart-lines'));
    $('cart-empty').hidden = state.cart.length > 0;
    $('checkout').hidden = state.cart.length === 0;
    state.cart.forEach((l) => {
      const it = state.items[l.item_id];
      if (!it) return;
      const nm = name(it), problem = lineProblem(l);
      const optText = l.options.map((o) => {
        const g = (it.option_groups || []).find((x) => x.id === o.group);
        const c = g && g.choices.find((x) => x.id === o.choice);
        return c ? name(c) : o.choice;
      }).join(' · ');
      const qid = `qty-${l.key.replace(/[^a-zA-Z0-9_-]/g, '_')}`;
      const qty = el('input', {
        type: 'number', id: qid, 'data-focus': qid, min: 1, max: 20, inputmode: 'numeric', value: l.quantity, 'class': 'qty',
        on: { change: (ev) => setQty(l, parseInt(ev.currentTarget.value, 10) || 1) }
      });
      const unit = unitPrice(it, l.options);
      ul.appendChild(el('li', { 'class': `line${problem ? ' problem' : ''}`, 'data-item': l.item_id, 'data-testid': 'cart-line' }, [
        el('div', { 'class': 'line-main' }, [
          el('p', { 'class': 'name', text: nm }),
          optText ? el('p', { 'class': 'muted small', text: optText }) : null,
          problem ? el('p', { 'class': 'badge sold', text: problem }) : null,
          el('p', { 'class': 'muted small', text: `${yuan(unit)} × ${l.quantity} = ${yuan(unit * l.quantity)}` })
        ]),
        el('div', { 'class': 'line-ctl' }, [
          el('label', { 'for': qid, 'class': 'sr-only', text: t('qtyOf', { name: nm }) }),
          el('button', { type: 'button', 'class': 'step', 'data-focus': `minus-${qid}`, 'aria-label': `${t('fewer')} · ${nm}`, text: '−', on: { click: () => setQty(l, l.quantity - 1) } }),
          qty,
          el('button', { type: 'button', 'class': 'step', 'data-focus': `plus-${qid}`, 'aria-label': `${t('more')} · ${nm}`, text: '+', on: { click: () => setQty(l, l.quantity + 1) } }),
          el('button', { type: 'button', 'class': 'ghost small', 'aria-label': t('removeLong', { name: nm }), text: t('remove'), on: { click: () => removeLine(l) } })
        ])
      ]));
    });
    renderSlots();
    renderEta();
    renderPay();
    const total = cartTotal();
    $('cart-total').textContent = yuan(total);
    const btn = $('place');
    btn.textContent = state.placing ? t('placing') : t('place', { price: yuan(total) });
    btn.disabled = state.placing || !state.cart.length || !(state.menu && state.menu.open) || placeBlockedUntil > Date.now();
    btn.setAttribute('aria-busy', state.placing ? 'true' : 'false');
  }
  function setQty(l, q) {
    if (q <= 0) { removeLine(l); return; }
    l.quantity = Math.min(20, q);
    delete state.problems[l.item_id];
    cartChanged();
  }
  function removeLine(l) {
    state.cart = state.cart.filter((x) => x !== l);
    delete state.problems[l.item_id];
    cartChanged();
    const first = document.querySelector('#cart-lines .step') || $('tab-menu');
    first.focus();
  }
  const slots = () => ((state.menu && Array.isArray(state.menu.pickup_slots)) ? state.menu.pickup_slots : []);
  function renderSlots() {
    const list = slots(), box = clear($('slot-list'));
    $('slot-field').hidden = list.length === 0;
    if (!list.length) { state.slot = null; return; }
    // A slot the kitchen cannot meet is not offered (an older box sends no `offered`).
    const usable = (s) => !s.full && s.offered !== false;
    const free = list.filter(usable);
    if (state.slot && !free.some((s) => s.id === state.slot)) state.slot = null;
    const next = state.menu.next_slot && free.find((s) => s.id === state.menu.next_slot);
    if (!state.slot && free.length) state.slot = (next || free[0]).id;
    list.forEach((s) => {
      const id = `slot-${String(s.id).replace(/[^a-zA-Z0-9_-]/g, '_')}`;
      const left = typeof s.capacity === 'number' && typeof s.taken === 'number' ? s.capacity - s.taken : null;
      const note = s.full ? t('slotFull') : !usable(s) ? t('slotCannot') : left !== null ? t('slotLeft', { n: left }) : '';
      box.appendChild(el('label', { 'for': id, 'class': `choice${usable(s) ? '' : ' full'}` }, [
        el('input', { type: 'radio', name: 'slot', id, value: s.id, disabled: !usable(s), checked: s.id === state.slot,
          on: { change: () => { state.slot = s.id; } } }),
        el('span', { text: `${slotTime(s.start)}–${slotTime(s.end)}` }),
        note ? el('span', { 'class': 'delta', text: note }) : null
      ]));
    });
    if (!free.length) box.appendChild(el('p', { 'class': 'error', text: t('allSlotsFull') }));
    const hint = $('slot-next');
    hint.hidden = !next;
    if (next) hint.textContent = t('slotNext', { time: slotTime(next.start) });
  }
  function renderEta() {
    const eta = $('cart-eta'), at = state.menu && state.menu.ready_estimate;
    eta.hidden = !at || !state.menu.open;
    if (at) eta.textContent = t('etaNow', { time: clock(at) });
  }
  // The kitchen's estimate of an order still being made, and whether it has slipped
  // past what was promised when it was placed.
  function estimateText(o) {
    if (!o.ready_estimate || !['placed', 'paid', 'preparing'].includes(o.state)) return '';
    const time = clock(o.ready_estimate);
    // Slipped past the promise while the kitchen has it (not while it awaits payment).
    const late = o.running_late_min && o.ready_promised_at;
    return late ? t('readyLate', { time, promised: clock(o.ready_promised_at) }) : t('readyAround', { time });
  }
  function renderPay() {
    const modes = (state.menu && state.menu.payment_modes) || [], box = clear($('pay-list'));
    $('pay-field').hidden = modes.length === 0;
    const label = (m) => (m === 'counter' ? t('payCounter') : m === 'campus_card' ? t('payCard') : m);
    if (modes.length === 1) { box.appendChild(el('p', { text: label(modes[0]) })); return; }
    modes.forEach((m) => {
      const id = `pay-${m}`;
      box.appendChild(el('label', { 'for': id, 'class': 'choice' }, [
        el('input', { type: 'radio', name: 'pay', id, value: m, checked: m === state.pay, on: { change: () => { state.pay = m; } } }),
        el('span', { text: label(m) })
      ]));
    });
  }

  // ------------------------------------------------------------------ placing
  let placeBlockedUntil = 0;
  function itemName(id) {
    const it = state.items[id];
    if (it) return name(it);
    return id;
  }
  function checkoutBody() {
    const body = {
      lines: state.cart.map((l) => ({ item_id: l.item_id, quantity: l.quantity, options: l.options })),
      payment_mode: state.pay
    };
    // Sent only when the box offers slots: an older box refuses unknown fields.
    if (slots().length && state.slot) body.pickup_slot = state.slot;
    return body;
  }
  function place() {
    if (state.placing || !state.cart.length) return;
    alertMsg('');
    unlockAudio();
    const known = state.cart.find((l) => { const it = state.items[l.item_id]; return !it || !available(it); });
    if (known) { explainStock('sold_out', known.item_id, 0); return; }
    if (slots().length && !state.slot) { alertMsg(slots().some((s) => !s.full) ? t('chooseSlot') : t('allSlotsFull')); return; }
    const body = checkoutBody(), text = JSON.stringify(body);
    // The same checkout keeps its key across retries and double taps, so the box places
    // it once; a changed cart is a new checkout with a new key.
    if (!state.checkout || state.checkout.body !== text) state.checkout = { key: uuid(), body: text };
    state.placing = true; renderCart();
    attemptPlace(body, state.checkout.key, 0);
  }
  function placeDone() { state.placing = false; renderCart(); }
  // The `closed` refusal: today's hours from its details, in the canteen's own time.
  function closedText(details) {
    if (details.closed_today) return t('closedToday');
    if (details.opening_time && details.closing_time) {
      return t('closedHours', { from: details.opening_time, to: details.closing_time });
    }
    return t('errClosed');
  }
  function attemptPlace(body, key, attempt) {
    api('POST', '/api/student/orders', body, { 'Idempotency-Key': key }).then((r) => {
      netUp();
      if (r.status === 201 || r.status === 200) {
        alertMsg('');
        state.checkout = null; state.cart = []; state.problems = {};
        saveCart();
        placeDone();
        upsertOrder(r.body);
        state.current = r.body.id;
        renderCartSummary(); renderMenu();
        show('order');
        say(t('ordered', { n: r.body.pickup_number }));
        loadMenu();
        return;
      }
      const code = r.code, details = (r.body && r.body.error && r.body.error.details) || {};
      if ((r.status === 503) && attempt < PLACE_RETRIES) {
        countdown(r.retryAfter || backoff(attempt), (s) => t('errBusy', { s }), () => attemptPlace(body, key, attempt + 1));
        return;
      }
      placeDone();
      if (code === 'sold_out' || code === 'not_enough_stock' || code === 'unavailable' || code === 'unknown_item') {
        explainStock(code, details.item_id);
        loadMenu();
      } else if (code === 'too_many_portions') {
        alertMsg(t('errTooManyPortions', { max: details.max, name: itemName(details.item_id) }));
        if (state.view !== 'cart') show('cart', false); else renderCart();
      } else if (code === 'too_many_unpaid_orders') {
        alertMsg(t('errTooManyUnpaid', { max: details.max }));
      } else if (code === 'account_blocked') {
        alertMsg(t('errBlocked', { msg: r.body.error.message }));
      } else if (code === 'closed') {
        alertMsg(closedText(details));
        loadMenu();
      } else if (code === 'rate_limited') {
        blockPlace(r.retryAfter || 60);
      } else if (code === 'invalid_options' || code === 'invalid_quantity' || code === 'invalid_lines' || code === 'payment_mode_not_offered') {
        alertMsg(t('errOptions', { msg: r.body.error.message }));
        loadMenu();
      } else if (code === 'idempotency_key_reused') {
        state.checkout = null; alertMsg(errorText(r));
      } else if (r.status !== 401) {
        alertMsg(errorText(r));
      }
    }, () => {
      if (attempt < PLACE_RETRIES) {
        countdown(backoff(attempt), (s) => t('errOfflinePlace', { s }), () => attemptPlace(body, key, attempt + 1));
      } else {
        placeDone();
        alertMsg(t('errOfflineGiveUp'));
      }
    });
  }
  function blockPlace(seconds) {
    placeBlockedUntil = Date.now() + seconds * 1000;
    renderCart();
    countdown(seconds, (s) => t('errRate', { s }), () => {
      placeBlockedUntil = 0; alertMsg(''); renderCart();
    });
  }
  // The box does not say how many are left (a hoarder would size an order by it):
  // "not enough" is shown as "only a few left".
  function explainStock(code, itemId) {
    const nm = itemName(itemId);
    const key = code === 'not_enough_stock' ? 'errNotEnough'
      : code === 'sold_out' ? 'errSoldOut' : 'errUnavailable';
    const badge = code === 'not_enough_stock' ? t('fewLeft') : code === 'sold_out' ? t('soldOut') : t('unavailable');
    if (itemId) state.problems[itemId] = badge;
    alertMsg(t(key, { name: nm }));
    if (state.view !== 'cart') show('cart', false); else renderCart();
  }

  // ------------------------------------------------------------------ orders
  // The progress shown on an order, in lifecycle order (display only).
  const STEPS = ['placed', 'paid', 'preparing', 'ready'];
  // Lifecycle facts are the box's: an order is still under way while something can
  // happen to it next, and waits for payment while paying is its usual next step.
  const nextEvents = (o) => o.next_events || [];
  const underWay = (o) => nextEvents(o).length > 0;
  const awaitsPayment = (o) => nextEvents(o)[0] === 'pay';
  function upsertOrder(o) {
    const i = state.orders.findIndex((x) => x.id === o.id);
    if (i >= 0) state.orders[i] = o; else state.orders.unshift(o);
  }
  function loadOrders() {
    return api('GET', '/api/student/orders').then((r) => {
      if (r.status !== 200) return;
      state.orders = r.body || [];
      if (!state.current) {
        const live = state.orders.find(underWay);
        if (live) state.current = live.id;
      }
      renderAll();
    }, () => { /* the banner from the menu poll says the box is unreachable */ });
  }
  function refreshOrder(id) {
    return api('GET', `/api/student/orders/${encodeURIComponent(id)}`).then((r) => {
      if (r.status !== 200) return;
      const before = state.orders.find((o) => o.id === id);
      upsertOrder(r.body);
      if (!before || before.state !== r.body.state) announce(r.body);
      renderAll();
    }, () => { /* the stream will reconnect and reload */ });
  }
  function announce(o) {
    if (o.state === 'ready') {
      say(t('nowReady', { n: o.pickup_number }));
      state.current = o.id;
      if (!$('opt-dialog').open) show('order', false);
      notify();
    } else {
      say(t('nowState', { n: o.pickup_number, state: t(`st_${o.state}`) }));
    }
  }
  const currentOrder = () => state.orders.find((o) => o.id === state.current);
  function renderActiveOrder() {
    const b = $('active-order');
    const o = state.orders.find(underWay);
    b.hidden = !o;
    if (!o) return;
    b.textContent = t('activeOrder', { n: o.pickup_number, state: t(`st_${o.state}`) });
    b.className = `active-order ${o.state}`;
    b.onclick = () => { state.current = o.id; show('order'); };
  }
  function renderOrder() {
    const o = currentOrder();
    if (!o) return;
    $('order-number-title').textContent = `#${o.pickup_number}`;
    const num = $('pickup-number');
    num.textContent = o.pickup_number;
    num.className = `pickup-number${o.state === 'ready' ? ' huge' : ''}`;
    const st = $('order-state');
    st.textContent = t(`st_${o.state}`);
    st.setAttribute('data-state', o.state);
    st.className = `state ${o.state}`;
    const steps = clear($('order-steps'));
    const at = o.state === 'picked_up' ? STEPS.length : STEPS.indexOf(o.state);
    STEPS.forEach((s, i) => {
      const done = i < at || (i === at && s === 'ready');
      const li = el('li', { 'class': done ? 'done' : i === at ? 'now' : '', text: t(`step_${s}`) });
      if (i === at) li.setAttribute('aria-current', 'step');
      steps.appendChild(li);
    });
    steps.hidden = at < 0;
    const est = $('ready-estimate'), eta = estimateText(o);
    est.hidden = !eta;
    est.textContent = eta;
    const ready = o.state === 'ready';
    $('ready-box').hidden = !ready;
    if (ready) loadQr(o);
    const pay = $('pay-box');
    const unpaid = awaitsPayment(o);
    pay.hidden = !unpaid;
    if (unpaid) {
      pay.textContent = '';
      const price = yuan(o.total_fen);
      pay.appendChild(el('p', { text: o.payment_mode === 'campus_card' ? t('payCardHow', { price }) : t('payCounterHow', { n: o.pickup_number, price }) }));
      pay.appendChild(el('p', { 'class': 'small', text: t('payBy', { time: clock(o.expires_at) }) }));
      pay.setAttribute('data-mode', o.payment_mode);
    }
    $('order-when').textContent = t('placedAt', { time: clock(o.placed_at) });
    const ul = clear($('order-lines'));
    o.lines.forEach((l) => {
      const opts = (l.options || []).map((x) => name(x)).join(' · ');
      ul.appendChild(el('li', { 'class': 'line' }, [
        el('div', { 'class': 'line-main' }, [
          el('p', { 'class': 'name', text: `${l.quantity} × ${name(l)}` }),
          opts ? el('p', { 'class': 'muted small', text: opts }) : null
        ]),
        el('p', { 'class': 'price', text: yuan(l.line_total_fen) })
      ]));
    });
    $('order-total').textContent = yuan(o.total_fen);
    // Whether the student may cancel is the box's answer, not the page's guess.
    const cancellable = o.can_cancel === true;
    $('cancel-box').hidden = !cancellable;
    if (!cancellable) $('cancel-confirm').hidden = true;
  }
  function loadQr(o) {
    if (state.qrFor === o.id && $('qr').firstChild) return;
    state.qrFor = o.id;
    api('GET', `/api/student/orders/${encodeURIComponent(o.id)}/qr.svg`).then((r) => {
      if (r.status !== 200 || !r.body || typeof r.body.raw !== 'string') { state.qrFor = null; return; }
      const doc = new DOMParser().parseFromString(r.body.raw, 'image/svg+xml');
      const svg = doc.documentElement;
      if (!svg || svg.nodeName !== 'svg') { state.qrFor = null; return; }
      svg.setAttribute('aria-hidden', 'true');
      svg.setAttribute('focusable', 'false');
      clear($('qr')).appendChild(document.importNode(svg, true));
    }, () => { state.qrFor = null; });
  }
  function renderOrders() {
    const ul = clear($('orders-list'));
    $('orders-empty').hidden = state.orders.length > 0;
    state.orders.forEach((o) => {
      const what = [o.lines.map((l) => `${l.quantity}× ${name(l)}`).join(', '), estimateText(o)].filter(Boolean).join(' · ');
      ul.appendChild(el('li', {}, [el('button', {
        type: 'button', 'class': `order-row ${o.state}`, 'data-testid': 'order-row',
        on: { click: () => { state.current = o.id; show('order'); } }
      }, [
        el('span', { 'class': 'num', text: `#${o.pickup_number}` }),
        el('span', { 'class': 'what' }, [el('span', { 'class': 'st', text: t(`st_${o.state}`) }), el('span', { 'class': 'muted small', text: `${clock(o.placed_at)} · ${what}` })]),
        el('span', { 'class': 'price', text: yuan(o.total_fen) })
      ])]));
    });
  }
  function cancelOrder() {
    const o = currentOrder();
    if (!o) return;
    const btn = $('cancel-yes');
    btn.disabled = true;
    api('POST', `/api/student/orders/${encodeURIComponent(o.id)}/cancel`, {}).then((r) => {
      btn.disabled = false;
      $('cancel-confirm').hidden = true;
      if (r.status === 200) { upsertOrder(r.body); alertMsg(''); say(t('cancelled')); renderAll(); loadMenu(); return; }
      if (r.code === 'kitchen_started') alertMsg(t('errKitchen'));
      else if (r.code === 'invalid_transition') alertMsg(t('errCannotCancel'));
      else if (r.status !== 401) alertMsg(errorText(r));
      refreshOrder(o.id);
    }, () => {
      btn.disabled = false;
      alertMsg(`${t('errOfflineGiveUp').split(/[.。]/)[0]}.`);
    });
  }

  // ------------------------------------------------------------------ live events
  const EVENT_KINDS = ['order.placed', 'order.paid', 'order.preparing', 'order.ready', 'order.picked_up', 'order.cancelled', 'order.expired', 'order.unclaimed'];
  function connectEvents() {
    if (!window.EventSource || !state.session) return;
    if (state.events) state.events.close();
    const es = new EventSource(`/api/student/events?access_token=${encodeURIComponent(state.session.token)}`);
    state.events = es;
    es.onopen = () => {
      // Events sent while disconnected are not replayed to students: catch up by reading.
      if (state.eventsAttempt > 0) { loadOrders(); netUp(); }
      state.eventsAttempt = 0;
    };
    EVENT_KINDS.forEach((k) => {
      es.addEventListener(k, (ev) => {
        let id = null;
        try { const d = JSON.parse(ev.data); id = d.aggregate_id || (d.payload && d.payload.order_id); } catch (e) { /* ignore */ }
        if (id) refreshOrder(id); else loadOrders();
      });
    });
    // The kitchen's estimate moved by a minute or more: no reload needed.
    es.addEventListener('order.estimate', (ev) => {
      let d = null;
      try { d = JSON.parse(ev.data); } catch (e) { return; }
      const o = d && state.orders.find((x) => x.id === d.order_id);
      if (!o) return;
      o.ready_estimate = d.ready_estimate;
      if (d.ready_promised_at) o.ready_promised_at = d.ready_promised_at;
      o.running_late_min = d.running_late_min;
      if (state.view === 'order') renderOrder();
      if (state.view === 'orders') renderOrders();
    });
    es.addEventListener('resync', () => loadOrders());
    es.onerror = () => {
      state.eventsAttempt += 1;
      if (es.readyState !== 2) return; // CONNECTING: the browser retries by itself
      // Closed for good (an HTTP error): find out whether the session ended, else retry.
      es.close();
      if (state.events !== es) return;
      state.events = null;
      const wait = backoff(state.eventsAttempt);
      api('GET', '/api/student/orders').then((r) => {
        if (r.status === 200) { state.orders = r.body || []; renderAll(); }
        if (state.session) setTimeout(connectEvents, wait * 1000);
      }, () => { if (state.session) setTimeout(connectEvents, wait * 1000); });
    };
  }

  // ------------------------------------------------------------------ ready alert
  let audio = null;
  function unlockAudio() {
    // Browsers allow sound only after a tap: prepare the context while we have one.
    try {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (Ctx && !audio) audio = new Ctx();
      if (audio && audio.state === 'suspended') audio.resume();
    } catch (e) { audio = null; }
  }
  function notify() {
    try { if (navigator.vibrate) navigator.vibrate([200, 100, 200]); } catch (e) { /* not allowed */ }
    try {
      if (!audio || audio.state !== 'running') return;
      const o = audio.createOscillator(), g = audio.createGain(), now = audio.currentTime;
      o.frequency.value = 880;
      g.gain.setValueAtTime(0.0001, now);
      g.gain.exponentialRampToValueAtTime(0.3, now + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, now + 0.35);
      o.connect(g); g.connect(audio.destination);
      o.start(now); o.stop(now + 0.4);
    } catch (e) { /* no sound then */ }
  }

  // ------------------------------------------------------------------ wiring
  function init() {
    $('login-form').addEventListener('submit', login);
    $('lang-toggle').addEventListener('click', () => {
      lang = lang === 'zh' ? 'en' : 'zh';
      store('set', KEY.lang, lang);
      applyLang();
      say(lang === 'zh' ? '已切换到简体中文' : 'Switched to English');
    });
    $('alert-close').addEventListener('click', () => alertMsg(''));
    document.querySelectorAll('#tabs button').forEach((b) => {
      b.addEventListener('click', () => { alertMsg(''); show(b.getAttribute('data-view')); });
    });
    $('opt-form').addEventListener('submit', addFromDialog);
    $('opt-cancel').addEventListener('click', closeDialog);
    $('opt-dialog').addEventListener('cancel', (ev) => { ev.preventDefault(); closeDialog(); });
    $('opt-minus').addEventListener('click', () => { $('opt-qty').value = Math.max(1, dialogQty() - 1); updateDialogPrice(); });
    $('opt-plus').addEventListener('click', () => { $('opt-qty').value = Math.min(20, dialogQty() + 1); updateDialogPrice(); });
    $('opt-qty').addEventListener('input', updateDialogPrice);
    $('place').addEventListener('click', place);
    $('cancel').addEventListener('click', () => { $('cancel-confirm').hidden = false; $('cancel-no').focus(); });
    $('cancel-no').addEventListener('click', () => { $('cancel-confirm').hidden = true; $('cancel').focus(); });
    $('cancel-yes').addEventListener('click', cancelOrder);
    $('order-more').addEventListener('click', () => show('menu'));
    $('logout').addEventListener('click', () => logout(false));
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState !== 'visible' || !state.session) return;
      loadMenu(); loadOrders();
      if (!state.events) connectEvents();
    });
    window.addEventListener('online', () => { if (state.session) { loadMenu(); loadOrders(); } });
    // Sound needs a tap first; the first tap anywhere prepares it for the ready beep.
    document.addEventListener('pointerdown', unlockAudio, { once: true });
    document.addEventListener('keydown', unlockAudio, { once: true });
    applyLang();
    if (sessionValid()) afterLogin();
    else { if (state.session) { logout(true); } show('login'); loadMenu(); }
  }
  init();
})();
