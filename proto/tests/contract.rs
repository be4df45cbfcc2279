//! Checks the shape of the `serial.v1` contract from the embedded file
//! descriptor set: services, RPCs and their streaming shapes, the idempotency
//! key of every state-changing request, and proto3 enum style. The tables
//! below are the contract the server is wired against; change them only
//! together with the `.proto` files.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet, MethodDescriptorProto};

const PACKAGE: &str = "serial.v1";

/// How messages flow in an RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Unary,
    ServerStream,
    ClientStream,
    Bidi,
}

/// (rpc, shape). The request type of RPC `X` is `XRequest` and its response
/// type `XResponse`, each used by that RPC only.
type Rpc = (&'static str, Shape);

use Shape::{Bidi, ServerStream, Unary};

/// Every service with every RPC. No other service or RPC may exist.
const SERVICES: &[(&str, &[Rpc])] = &[
    (
        "MasterDataService",
        &[
            ("AddProduct", Unary),
            ("GetProduct", Unary),
            ("ListProducts", Unary),
            ("AddLot", Unary),
            ("ListLots", Unary),
            ("GetGuessingRatios", Unary),
        ],
    ),
    (
        "PoolService",
        &[
            ("GetLimits", Unary),
            ("RequestPool", ServerStream),
            ("GetPool", Unary),
            ("Commission", Bidi),
            ("ReturnSerials", Bidi),
        ],
    ),
    (
        "VerificationService",
        &[
            ("Verify", Unary),
            ("VerifyBatch", Unary),
            ("VerifyStream", Bidi),
            ("CheckSaleableReturn", Unary),
        ],
    ),
    (
        "StatusService",
        &[
            ("Decommission", Bidi),
            ("Undo", Bidi),
            ("RecallLot", Unary),
            ("WithdrawProduct", Unary),
            ("FlagPack", Unary),
        ],
    ),
    (
        "AggregationService",
        &[
            ("RequestSsccPool", ServerStream),
            ("Pack", Unary),
            ("Unpack", Unary),
            ("GetHierarchy", Unary),
            ("DecommissionHierarchy", Unary),
        ],
    ),
    (
        "EventService",
        &[
            ("Watch", ServerStream),
            ("Export", ServerStream),
            ("VerifyAuditTrail", Unary),
        ],
    ),
    ("ReconciliationService", &[("Reconcile", Unary)]),
    (
        "AccessService",
        &[
            ("CreateToken", Unary),
            ("ListTokens", Unary),
            ("RevokeToken", Unary),
        ],
    ),
    ("ServerInfoService", &[("GetServerInfo", Unary)]),
];

/// RPCs that change state: their request (or, for bulk streams, each group)
/// carries `string request_id = 1`. Every request with a `request_id` field
/// must be listed here, and nothing else.
const STATE_CHANGING: &[(&str, &str)] = &[
    ("MasterDataService", "AddProduct"),
    ("MasterDataService", "AddLot"),
    ("PoolService", "RequestPool"),
    ("PoolService", "Commission"),
    ("PoolService", "ReturnSerials"),
    ("StatusService", "Decommission"),
    ("StatusService", "Undo"),
    ("StatusService", "RecallLot"),
    ("StatusService", "WithdrawProduct"),
    ("StatusService", "FlagPack"),
    ("AggregationService", "RequestSsccPool"),
    ("AggregationService", "Pack"),
    ("AggregationService", "Unpack"),
    ("AggregationService", "DecommissionHierarchy"),
    ("AccessService", "CreateToken"),
    ("AccessService", "RevokeToken"),
];

/// The decoded contract: services by name, messages and enums by full name.
struct Contract {
    services: BTreeMap<String, Vec<MethodDescriptorProto>>,
    messages: BTreeMap<String, DescriptorProto>,
    enums: BTreeMap<String, EnumDescriptorProto>,
}

fn collect_message(
    prefix: &str,
    message: &DescriptorProto,
    messages: &mut BTreeMap<String, DescriptorProto>,
    enums: &mut BTreeMap<String, EnumDescriptorProto>,
) {
    let name = format!("{prefix}.{}", message.name());
    for nested in &message.nested_type {
        collect_message(&name, nested, messages, enums);
    }
    for nested in &message.enum_type {
        enums.insert(format!("{name}.{}", nested.name()), nested.clone());
    }
    messages.insert(name, message.clone());
}

fn contract() -> Contract {
    let set =
        FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
    let mut contract = Contract {
        services: BTreeMap::new(),
        messages: BTreeMap::new(),
        enums: BTreeMap::new(),
    };
    for file in set.file.iter().filter(|file| file.package() == PACKAGE) {
        assert_eq!(file.syntax(), "proto3", "{} must be proto3", file.name());
        let prefix = format!(".{PACKAGE}");
        for service in &file.service {
            let previous = contract
                .services
                .insert(service.name().to_owned(), service.method.clone());
            assert!(
                previous.is_none(),
                "service {} defined twice",
                service.name()
            );
        }
        for message in &file.message_type {
            collect_message(
                &prefix,
                message,
                &mut contract.messages,
                &mut contract.enums,
            );
        }
        for enumeration in &file.enum_type {
            contract.enums.insert(
                format!("{prefix}.{}", enumeration.name()),
                enumeration.clone(),
            );
        }
    }
    contract
}

fn shape(method: &MethodDescriptorProto) -> Shape {
    match (method.client_streaming(), method.server_streaming()) {
        (false, false) => Shape::Unary,
        (false, true) => Shape::ServerStream,
        (true, false) => Shape::ClientStream,
        (true, true) => Shape::Bidi,
    }
}

fn qualified(message: &str) -> String {
    format!(".{PACKAGE}.{message}")
}

fn method<'a>(contract: &'a Contract, service: &str, rpc: &str) -> &'a MethodDescriptorProto {
    let methods = contract
        .services
        .get(service)
        .unwrap_or_else(|| panic!("service {service} is missing"));
    methods
        .iter()
        .find(|method| method.name() == rpc)
        .unwrap_or_else(|| panic!("rpc {service}.{rpc} is missing"))
}

#[test]
fn every_service_has_exactly_its_rpcs_with_their_shapes() {
    let contract = contract();
    for (service, rpcs) in SERVICES {
        for &(rpc, expected_shape) in *rpcs {
            let method = method(&contract, service, rpc);
            let request = qualified(&format!("{rpc}Request"));
            let response = qualified(&format!("{rpc}Response"));
            assert_eq!(method.input_type(), request, "{service}.{rpc} request type");
            assert_eq!(
                method.output_type(),
                response,
                "{service}.{rpc} response type"
            );
            assert_eq!(
                shape(method),
                expected_shape,
                "{service}.{rpc} streaming shape"
            );
            assert!(
                contract.messages.contains_key(&request),
                "{request} is defined"
            );
            assert!(
                contract.messages.contains_key(&response),
                "{response} is defined"
            );
        }
        let listed: BTreeSet<&str> = rpcs.iter().map(|rpc| rpc.0).collect();
        let defined: BTreeSet<&str> = contract.services[*service]
            .iter()
            .map(|m| m.name())
            .collect();
        assert_eq!(defined, listed, "{service}: RPCs defined vs listed");
    }
    let listed: BTreeSet<&str> = SERVICES.iter().map(|service| service.0).collect();
    let defined: BTreeSet<&str> = contract.services.keys().map(String::as_str).collect();
    assert_eq!(defined, listed, "services defined vs listed");
}

#[test]
fn rpc_names_are_unique_across_services() {
    // Request/response type names derive from RPC names, so a repeated RPC
    // name would make two RPCs share a type.
    let mut seen = BTreeSet::new();
    for (service, rpcs) in SERVICES {
        for (rpc, _) in *rpcs {
            assert!(seen.insert(*rpc), "{service}.{rpc}: RPC name used twice");
        }
    }
}

#[test]
fn every_state_changing_request_has_request_id_first() {
    let contract = contract();
    let mut state_changing_inputs = BTreeSet::new();
    for &(service, rpc) in STATE_CHANGING {
        let input = method(&contract, service, rpc).input_type().to_owned();
        let message = &contract.messages[&input];
        let field = message
            .field
            .iter()
            .find(|field| field.name() == "request_id")
            .unwrap_or_else(|| panic!("{input} of {service}.{rpc} has no request_id"));
        assert_eq!(field.number(), 1, "{input}.request_id number");
        assert_eq!(field.r#type(), Type::String, "{input}.request_id type");
        assert_eq!(
            field.label(),
            Label::Optional,
            "{input}.request_id must be singular"
        );
        assert!(
            field.oneof_index.is_none(),
            "{input}.request_id must not be in a oneof"
        );
        state_changing_inputs.insert(input);
    }
    // Conversely, a request_id on any other request would promise an
    // idempotency the server does not keep.
    for (service, methods) in &contract.services {
        for method in methods {
            let input = method.input_type();
            let has_request_id = contract.messages[input]
                .field
                .iter()
                .any(|field| field.name() == "request_id");
            assert_eq!(
                has_request_id,
                state_changing_inputs.contains(input),
                "{service}.{}: request_id present iff listed in STATE_CHANGING",
                method.name()
            );
        }
    }
}

/// `PackState` → `PACK_STATE`.
fn screaming_snake(name: &str) -> String {
    let mut out = String::new();
    for (index, character) in name.chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            out.push('_');
        }
        out.push(character.to_ascii_uppercase());
    }
    out
}

#[test]
fn screaming_snake_examples() {
    for (input, expected) in [
        ("PackState", "PACK_STATE"),
        ("EuAlertCode", "EU_ALERT_CODE"),
        ("Role", "ROLE"),
    ] {
        assert_eq!(screaming_snake(input), expected, "{input}");
    }
}

#[test]
fn every_enum_is_proto3_style() {
    let contract = contract();
    assert!(!contract.enums.is_empty(), "no enums found");
    for (name, enumeration) in &contract.enums {
        let prefix = format!("{}_", screaming_snake(enumeration.name()));
        let zero = enumeration
            .value
            .iter()
            .find(|value| value.number() == 0)
            .unwrap_or_else(|| panic!("{name} has no zero value"));
        assert!(
            zero.name().ends_with("_UNSPECIFIED"),
            "{name}: zero value {} must end in _UNSPECIFIED",
            zero.name()
        );
        assert_eq!(
            zero.name(),
            format!("{prefix}UNSPECIFIED"),
            "{name}: zero value name"
        );
        for value in &enumeration.value {
            assert!(
                value.name().starts_with(&prefix),
                "{name}: value {} must start with {prefix}",
                value.name()
            );
        }
    }
}

#[test]
fn every_referenced_type_is_defined() {
    let contract = contract();
    for (name, message) in &contract.messages {
        for field in &message.field {
            let type_name = field.type_name();
            if type_name.is_empty() || type_name.starts_with(".google.protobuf.") {
                continue;
            }
            assert!(
                contract.messages.contains_key(type_name) || contract.enums.contains_key(type_name),
                "{name}.{} refers to undefined {type_name}",
                field.name()
            );
        }
    }
}

/// Compile-time check that tonic generated a client and a server for every
/// service, and that their names match the table.
#[test]
fn tonic_clients_and_servers_exist() {
    use proto::serial::v1::*;
    use tonic::server::NamedService;
    use tonic::transport::Channel;

    #[derive(Debug)]
    struct Stub;
    impl master_data_service_server::MasterDataService for Stub {}
    impl pool_service_server::PoolService for Stub {}
    impl verification_service_server::VerificationService for Stub {}
    impl status_service_server::StatusService for Stub {}
    impl aggregation_service_server::AggregationService for Stub {}
    impl event_service_server::EventService for Stub {}
    impl reconciliation_service_server::ReconciliationService for Stub {}
    impl access_service_server::AccessService for Stub {}
    impl server_info_service_server::ServerInfoService for Stub {}

    fn client<T>() -> &'static str {
        std::any::type_name::<T>()
    }

    let generated = [
        (
            client::<master_data_service_client::MasterDataServiceClient<Channel>>(),
            master_data_service_server::MasterDataServiceServer::<Stub>::NAME,
        ),
        (
            client::<pool_service_client::PoolServiceClient<Channel>>(),
            pool_service_server::PoolServiceServer::<Stub>::NAME,
        ),
        (
            client::<verification_service_client::VerificationServiceClient<Channel>>(),
            verification_service_server::VerificationServiceServer::<Stub>::NAME,
        ),
        (
            client::<status_service_client::StatusServiceClient<Channel>>(),
            status_service_server::StatusServiceServer::<Stub>::NAME,
        ),
        (
            client::<aggregation_service_client::AggregationServiceClient<Channel>>(),
            aggregation_service_server::AggregationServiceServer::<Stub>::NAME,
        ),
        (
            client::<event_service_client::EventServiceClient<Channel>>(),
            event_service_server::EventServiceServer::<Stub>::NAME,
        ),
        (
            client::<reconciliation_service_client::ReconciliationServiceClient<Channel>>(),
            reconciliation_service_server::ReconciliationServiceServer::<Stub>::NAME,
        ),
        (
            client::<access_service_client::AccessServiceClient<Channel>>(),
            access_service_server::AccessServiceServer::<Stub>::NAME,
        ),
        (
            client::<server_info_service_client::ServerInfoServiceClient<Channel>>(),
            server_info_service_server::ServerInfoServiceServer::<Stub>::NAME,
        ),
    ];
    // Servers can be built from an implementation relying on the default
    // (UNIMPLEMENTED) bodies.
    let _ = pool_service_server::PoolServiceServer::new(Stub);
    let _ = server_info_service_server::ServerInfoServiceServer::new(Stub);

    let names: BTreeSet<&str> = generated.iter().map(|(_, name)| *name).collect();
    let expected: BTreeSet<String> = SERVICES
        .iter()
        .map(|(service, _)| format!("{PACKAGE}.{service}"))
        .collect();
    assert_eq!(
        names,
        expected.iter().map(String::as_str).collect(),
        "generated server names"
    );
    for (client, name) in generated {
        let service = name.trim_start_matches("serial.v1.");
        assert!(
            client.contains(&format!("{service}Client")),
            "{client} is the client of {name}"
        );
    }
}
