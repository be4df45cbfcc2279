//! `serial.v1.MasterDataService`: products, lots and the guessing-rule figures.

use proto::serial::v1 as pb;
use proto::serial::v1::master_data_service_server::MasterDataService;
use tonic::{Request, Response, Status};

use crate::access::principal;
use crate::convert::{self, invalid, status};
use crate::grpc::Api;

/// Largest page of a list answer, and the default when the client asks 0.
pub(crate) const PAGE_SIZE_MAX: usize = 1000;
const PAGE_SIZE_DEFAULT: usize = 100;

fn page_size(requested: u32) -> usize {
    match requested as usize {
        0 => PAGE_SIZE_DEFAULT,
        n => n.min(PAGE_SIZE_MAX),
    }
}

pub(crate) fn product_message(product: &issuer::Product) -> pb::Product {
    let record = &product.record;
    let prefix_end = 1 + usize::from(record.company_prefix_length);
    pb::Product {
        gtin: product.gtin.as_str().to_owned(),
        name: record.name.clone(),
        company_prefix_length: u32::from(record.company_prefix_length),
        company_prefix: product
            .gtin
            .as_str()
            .get(1..prefix_end)
            .unwrap_or_default()
            .to_owned(),
        market_profile: record.format.profile.clone(),
        serial_format: Some(format_message(&product.format)),
        ndc: record.ndc.clone(),
        guessing_rule_enforced: record.guessing_rule_enforced,
        created_at: Some(convert::timestamp(record.created_micros)),
        withdrawn: record.withdrawn,
        withdrawn_at: (record.withdrawn_micros > 0)
            .then(|| convert::timestamp(record.withdrawn_micros)),
        withdrawal_reason: record.withdrawal_reason.clone(),
    }
}

pub(crate) fn format_message(format: &issuer::format::Format) -> pb::SerialFormat {
    pb::SerialFormat {
        alphabet: format.serial.alphabet_text().to_owned(),
        length: format.serial.length(),
    }
}

pub(crate) fn ratio_message(figures: &issuer::GuessingFigures) -> pb::GuessingRatio {
    pb::GuessingRatio {
        gtin: figures.gtin.as_str().to_owned(),
        issued: figures.issued,
        space_size: figures.space_size.to_string(),
        ratio: figures.ratio,
        ratio_limit: figures.ratio_limit,
        enforced: figures.enforced,
        issuable_remaining: figures.issuable_remaining,
    }
}

pub(crate) fn lot_message(lot: &issuer::LotInfo) -> pb::Lot {
    let expired = gs1::Expiry::new(&lot.expiry)
        .map(|e| e.effective_date(convert::today()) < convert::today())
        .unwrap_or(false);
    pb::Lot {
        gtin: lot.gtin.as_str().to_owned(),
        lot: lot.lot.clone(),
        expiry: convert::expiry_date(&lot.expiry),
        status: match lot.status {
            issuer::records::LotStatus::Active => pb::LotStatus::Active as i32,
            issuer::records::LotStatus::Recalled => pb::LotStatus::Recalled as i32,
        },
        expired,
        created_at: Some(convert::timestamp(lot.created_micros)),
        recalled_at: (lot.recalled_micros > 0).then(|| convert::timestamp(lot.recalled_micros)),
        recall_reason: lot.recall_reason.clone(),
    }
}

impl Api {
    /// The registered product of `gtin`, or NOT_FOUND.
    async fn registered_product(&self, gtin: gs1::Gtin) -> Result<issuer::Product, Status> {
        self.issuer
            .product(gtin.clone())
            .await
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("GTIN {gtin} is not registered")))
    }
}

/// An optional GTIN field: empty means "not given".
fn optional_gtin(field: &str, text: &str) -> Result<Option<gs1::Gtin>, Status> {
    match text {
        "" => Ok(None),
        text => convert::gtin(field, text).map(Some),
    }
}

#[tonic::async_trait]
impl MasterDataService for Api {
    async fn add_product(
        &self,
        request: Request<pb::AddProductRequest>,
    ) -> Result<Response<pb::AddProductResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        convert::identifier("request_id", &request.request_id, true)?;
        let gtin = convert::gtin("gtin", &request.gtin)?;
        caller.check_gtin("gtin", gtin.as_str())?;
        let name = convert::name("name", &request.name)?;
        let company_prefix_length = u8::try_from(request.company_prefix_length)
            .ok()
            .filter(|l| (6..=12).contains(l))
            .ok_or_else(|| {
                invalid(
                    "company_prefix_length",
                    format!("{} is outside 6..=12", request.company_prefix_length),
                )
            })?;
        if request.market_profile.is_empty() {
            return Err(invalid(
                "market_profile",
                "required (eu-fmd, us-dscsa, ru-chestny-znak, br-anvisa, sgtin-96, custom)",
            ));
        }
        let ndc = match request.ndc.as_deref() {
            None | Some("") => None,
            Some(text) => Some(convert::ndc("ndc", text, &gtin)?),
        };
        let product = issuer::NewProduct {
            gtin,
            name,
            company_prefix_length,
            profile: request.market_profile,
            custom_format: request.custom_format.map(|f| (f.alphabet, f.length)),
            ndc,
            guessing_rule_enforced: request.guessing_rule_enforced,
            principal: caller.name.clone(),
        };
        let product = self.issuer.add_product(product).await.map_err(status)?;
        Ok(Response::new(pb::AddProductResponse {
            product: Some(product_message(&product)),
        }))
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let caller = principal(&request)?;
        let gtin = convert::gtin("gtin", &request.into_inner().gtin)?;
        caller.check_gtin("gtin", gtin.as_str())?;
        let product = self.registered_product(gtin).await?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(product_message(&product)),
        }))
    }

    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let after = optional_gtin("page_token", &request.page_token)?;
        let limit = page_size(request.page_size);
        let mut products = Vec::new();
        let mut cursor = after;
        // Filters apply after the scan; keep scanning pages until the page is full.
        loop {
            let batch = self
                .issuer
                .products(cursor.clone(), limit)
                .await
                .map_err(status)?;
            let exhausted = batch.len() < limit;
            cursor = batch.last().map(|p| p.gtin.clone()).or(cursor);
            for product in batch {
                let message = product_message(&product);
                let profile_ok = request.market_profile.is_empty()
                    || message.market_profile == request.market_profile;
                let prefix_ok = request.company_prefix.is_empty()
                    || message.company_prefix == request.company_prefix;
                let scope_ok = caller.scope.covers_gtin(&message.gtin);
                if profile_ok && prefix_ok && scope_ok && products.len() < limit {
                    products.push(message);
                }
            }
            if exhausted || products.len() >= limit {
                let next_page_token = if exhausted {
                    String::new()
                } else {
                    products.last().map(|p| p.gtin.clone()).unwrap_or_default()
                };
                return Ok(Response::new(pb::ListProductsResponse {
                    products,
                    next_page_token,
                }));
            }
        }
    }

    async fn add_lot(
        &self,
        request: Request<pb::AddLotRequest>,
    ) -> Result<Response<pb::AddLotResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        convert::identifier("request_id", &request.request_id, true)?;
        let gtin = convert::gtin("gtin", &request.gtin)?;
        caller.check_gtin("gtin", gtin.as_str())?;
        let lot = issuer::NewLot {
            gtin,
            lot: convert::lot("lot", &request.lot)?,
            expiry: convert::expiry("expiry", &request.expiry)?,
            principal: caller.name.clone(),
        };
        let lot = self.issuer.add_lot(lot).await.map_err(status)?;
        Ok(Response::new(pb::AddLotResponse {
            lot: Some(lot_message(&lot)),
        }))
    }

    async fn list_lots(
        &self,
        request: Request<pb::ListLotsRequest>,
    ) -> Result<Response<pb::ListLotsResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let gtin = optional_gtin("gtin", &request.gtin)?;
        if let Some(gtin) = &gtin {
            caller.check_gtin("gtin", gtin.as_str())?;
        }
        let after = match request.page_token.split_once('/') {
            None if request.page_token.is_empty() => None,
            Some((g, lot)) => Some((convert::gtin("page_token", g)?, lot.to_owned())),
            None => return Err(invalid("page_token", "not a token from ListLots")),
        };
        let limit = page_size(request.page_size);
        let lots = self.issuer.lots(gtin, after, limit).await.map_err(status)?;
        let next_page_token = match lots.last() {
            Some(last) if lots.len() == limit => format!("{}/{}", last.gtin, last.lot),
            _ => String::new(),
        };
        let wanted = request.status;
        let lots = lots
            .iter()
            .map(lot_message)
            .filter(|l| wanted == 0 || l.status == wanted)
            .filter(|l| caller.scope.covers_gtin(&l.gtin))
            .collect();
        Ok(Response::new(pb::ListLotsResponse {
            lots,
            next_page_token,
        }))
    }

    async fn get_guessing_ratios(
        &self,
        request: Request<pb::GetGuessingRatiosRequest>,
    ) -> Result<Response<pb::GetGuessingRatiosResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        if !request.gtins.is_empty() {
            if request.gtins.len() > PAGE_SIZE_MAX {
                return Err(invalid(
                    "gtins",
                    format!("at most {PAGE_SIZE_MAX} per request"),
                ));
            }
            let mut ratios = Vec::new();
            for (index, text) in request.gtins.iter().enumerate() {
                let field = format!("gtins[{index}]");
                let gtin = convert::gtin(&field, text)?;
                caller.check_gtin(&field, gtin.as_str())?;
                let product = self.registered_product(gtin).await?;
                ratios.push(ratio_message(&self.issuer.figures(&product)));
            }
            return Ok(Response::new(pb::GetGuessingRatiosResponse {
                ratios,
                next_page_token: String::new(),
            }));
        }
        let after = optional_gtin("page_token", &request.page_token)?;
        let limit = page_size(request.page_size);
        let products = self.issuer.products(after, limit).await.map_err(status)?;
        let next_page_token = match products.last() {
            Some(last) if products.len() == limit => last.gtin.as_str().to_owned(),
            _ => String::new(),
        };
        let ratios = products
            .iter()
            .filter(|p| caller.scope.covers_gtin(p.gtin.as_str()))
            .map(|p| ratio_message(&self.issuer.figures(p)))
            .collect();
        Ok(Response::new(pb::GetGuessingRatiosResponse {
            ratios,
            next_page_token,
        }))
    }
}
