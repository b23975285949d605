//! Pricing: a student's request checked against the menu snapshot and the canteen's
//! settings, every price computed by the box (the client's prices are never trusted).
//! Also the `Idempotency-Key` and the request fingerprint that tells a retry from a
//! different order. Pure.

use super::canteen::Canteen;
use super::menu::Menu;
use canteen_api::ids::ItemId;
use canteen_api::order::{
    IDEMPOTENCY_KEY_MAX, LINES_MAX, OrderLine, OrderRequest, PaymentMode, PricedOption,
    QUANTITY_MAX,
};

/// Why a request cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("an order needs 1 to {LINES_MAX} lines")]
    LineCount,
    #[error("quantity must be between 1 and {QUANTITY_MAX} (line {line})")]
    Quantity { line: usize },
    #[error("no menu item {0}")]
    UnknownItem(ItemId),
    #[error("{name} is not available today")]
    Unavailable { item_id: ItemId, name: String },
    #[error("{0}")]
    Options(String),
    #[error("payment mode {0:?} is not offered here")]
    PaymentMode(PaymentMode),
    #[error("there is no pickup slot {0:?}")]
    UnknownSlot(String),
    #[error("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters")]
    BadIdempotencyKey,
    #[error("at most {max} portions of {name} per order, so everyone gets some")]
    TooManyPortions {
        item_id: ItemId,
        name: String,
        max: i64,
    },
}

/// A request checked against the menu and priced by the server.
#[derive(Debug, Clone)]
pub struct PricedOrder {
    pub lines: Vec<OrderLine>,
    /// Portions per dish across the lines (what placement reserves).
    pub portions: Vec<(ItemId, i64)>,
    pub total_fen: i64,
    pub payment_mode: PaymentMode,
    pub pickup_slot: Option<crdt::settings::PickupSlot>,
}

/// Validates a request against the menu snapshot and computes every price.
pub fn price(
    menu: &Menu,
    request: &OrderRequest,
    canteen: &Canteen,
    portions_max: i64,
) -> Result<PricedOrder, PriceError> {
    if request.lines.is_empty() || request.lines.len() > LINES_MAX {
        return Err(PriceError::LineCount);
    }
    if !canteen.payment_modes.contains(&request.payment_mode) {
        return Err(PriceError::PaymentMode(request.payment_mode));
    }
    let pickup_slot = match &request.pickup_slot {
        None => None,
        Some(id) => Some(
            canteen
                .slot(id)
                .cloned()
                .ok_or_else(|| PriceError::UnknownSlot(id.clone()))?,
        ),
    };
    let mut lines = Vec::with_capacity(request.lines.len());
    for (n, line) in request.lines.iter().enumerate() {
        if line.quantity == 0 || line.quantity > QUANTITY_MAX {
            return Err(PriceError::Quantity { line: n + 1 });
        }
        let item = menu
            .get(line.item_id)
            .filter(|it| !it.fields.archived)
            .ok_or(PriceError::UnknownItem(line.item_id))?;
        if !item.fields.available {
            return Err(PriceError::Unavailable {
                item_id: item.id,
                name: item.fields.name_en.clone(),
            });
        }
        let name = &item.fields.name_en;
        let mut options = Vec::new();
        for chosen in &line.options {
            let group = item
                .fields
                .option_groups
                .iter()
                .find(|g| g.id == chosen.group)
                .ok_or_else(|| {
                    PriceError::Options(format!("{name} has no option group {:?}", chosen.group))
                })?;
            let choice = group
                .choices
                .iter()
                .find(|c| c.id == chosen.choice)
                .ok_or_else(|| {
                    PriceError::Options(format!(
                        "{name}: {:?} is not a choice of {:?}",
                        chosen.choice, group.id
                    ))
                })?;
            if options
                .iter()
                .any(|o: &PricedOption| o.group == group.id && o.choice == choice.id)
            {
                return Err(PriceError::Options(format!(
                    "{name}: {:?} is chosen twice",
                    choice.id
                )));
            }
            options.push(PricedOption {
                group: group.id.clone(),
                choice: choice.id.clone(),
                name_zh: choice.name_zh.clone(),
                name_en: choice.name_en.clone(),
                price_delta_fen: choice.price_delta_fen,
            });
        }
        for group in &item.fields.option_groups {
            let count = options.iter().filter(|o| o.group == group.id).count() as u32;
            if count < group.min_choices || count > group.max_choices {
                return Err(PriceError::Options(
                    if group.min_choices == group.max_choices {
                        format!(
                            "{name}: choose exactly {} of {:?}",
                            group.min_choices, group.name_en
                        )
                    } else {
                        format!(
                            "{name}: choose {} to {} of {:?}",
                            group.min_choices, group.max_choices, group.name_en
                        )
                    },
                ));
            }
        }
        let unit =
            (item.fields.price_fen + options.iter().map(|o| o.price_delta_fen).sum::<i64>()).max(0);
        // The same dish with the same choices twice is one line of both quantities.
        let same = |l: &OrderLine| {
            l.item_id == item.id
                && l.options.len() == options.len()
                && options.iter().all(|o| {
                    l.options
                        .iter()
                        .any(|p| p.group == o.group && p.choice == o.choice)
                })
        };
        if let Some(earlier) = lines.iter_mut().find(|l| same(l)) {
            earlier.quantity += i64::from(line.quantity);
            earlier.line_total_fen = earlier.unit_price_fen * earlier.quantity;
            continue;
        }
        lines.push(OrderLine {
            item_id: item.id,
            name_zh: item.fields.name_zh.clone(),
            name_en: item.fields.name_en.clone(),
            quantity: i64::from(line.quantity),
            unit_price_fen: unit,
            line_total_fen: unit * i64::from(line.quantity),
            options,
        });
    }
    // Fair share: however the lines are split, one order takes at most `portions_max`
    // of a dish.
    let portions = super::lifecycle::portions(&lines);
    if let Some(&(item_id, _)) = portions.iter().find(|(_, n)| *n > portions_max) {
        let name = lines
            .iter()
            .find(|l| l.item_id == item_id)
            .map(|l| l.name_en.clone())
            .unwrap_or_default();
        return Err(PriceError::TooManyPortions {
            item_id,
            name,
            max: portions_max,
        });
    }
    let total_fen = lines.iter().map(|l| l.line_total_fen).sum();
    Ok(PricedOrder {
        lines,
        portions,
        total_fen,
        payment_mode: request.payment_mode,
        pickup_slot,
    })
}

/// A validated `Idempotency-Key` header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<Self, PriceError> {
        if text.is_empty()
            || text.len() > IDEMPOTENCY_KEY_MAX
            || !text.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(PriceError::BadIdempotencyKey);
        }
        Ok(Self(text.to_owned()))
    }
}

/// A fingerprint of the request, to tell a retry from a different order under the same key.
pub fn request_hash(request: &OrderRequest) -> String {
    use sha2::Digest;
    let canonical = serde_json::to_vec(request).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&canonical))
}
