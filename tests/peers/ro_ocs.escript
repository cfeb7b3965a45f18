#!/usr/bin/env escript
%%! -smp enable
%% ro_ocs.escript -- an online charging server (Ro, RFC 4006 Credit-Control, 3GPP TS 32.299)
%% on Erlang/OTP diameter that answers every CCR at once, for scripts/bench-originate.sh.
%% Loopback only; exits by itself after --duration.
%%
%%   ro_ocs.escript --port P [--host ocs.test.local] [--realm test.local] [--duration 600]
%%
%% Every CCR gets a CCA with Result-Code 2001, the request's CC-Request-Type and
%% CC-Request-Number (RFC 4006 §8.3/§8.2: the answer carries them back, which is what lets an
%% asynchronous client match answer and request) and, per Multiple-Services-Credit-Control,
%% a Granted-Service-Unit of 60 s with the request's Rating-Group. 3GPP AVPs it has no
%% definition for (Service-Information...) are accepted as `* [ AVP ]` (strict_mbit off).
-mode(compile).
-export([main/1, peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

-include_lib("diameter/include/diameter.hrl").

-define(CC_DIA, <<"
@id 4
@name cc_dict
@prefix cc
@inherits diameter_gen_base_rfc6733
@avp_types
   CC-Request-Number 415 Unsigned32 M
   CC-Request-Type 416 Enumerated M
   CC-Time 420 Unsigned32 M
   Granted-Service-Unit 431 Grouped M
   Rating-Group 432 Unsigned32 M
   Requested-Service-Unit 437 Grouped M
   Service-Identifier 439 Unsigned32 M
   Subscription-Id 443 Grouped M
   Subscription-Id-Data 444 UTF8String M
   Multiple-Services-Credit-Control 456 Grouped M
   User-Equipment-Info 458 Grouped -
   User-Equipment-Info-Type 459 Enumerated -
   User-Equipment-Info-Value 460 OctetString -
   Service-Context-Id 461 UTF8String M
   Subscription-Id-Type 450 Enumerated M
   Multiple-Services-Indicator 455 Enumerated M
   Validity-Time 448 Unsigned32 M
@grouped
   Subscription-Id ::= < AVP Header: 443 >
          { Subscription-Id-Type }
          { Subscription-Id-Data }
   Requested-Service-Unit ::= < AVP Header: 437 >
          [ CC-Time ]
        * [ AVP ]
   Granted-Service-Unit ::= < AVP Header: 431 >
          [ CC-Time ]
        * [ AVP ]
   Multiple-Services-Credit-Control ::= < AVP Header: 456 >
          [ Granted-Service-Unit ]
          [ Requested-Service-Unit ]
        * [ Service-Identifier ]
          [ Rating-Group ]
          [ Validity-Time ]
          [ Result-Code ]
        * [ AVP ]
   User-Equipment-Info ::= < AVP Header: 458 >
          { User-Equipment-Info-Type }
          { User-Equipment-Info-Value }
@messages
   CCR ::= < Diameter Header: 272, REQ, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { Auth-Application-Id }
          { Service-Context-Id }
          { CC-Request-Type }
          { CC-Request-Number }
          [ Destination-Host ]
          [ User-Name ]
          [ Origin-State-Id ]
          [ Event-Timestamp ]
        * [ Subscription-Id ]
          [ Multiple-Services-Indicator ]
        * [ Multiple-Services-Credit-Control ]
          [ User-Equipment-Info ]
        * [ Proxy-Info ]
        * [ Route-Record ]
        * [ AVP ]
   CCA ::= < Diameter Header: 272, PXY >
          < Session-Id >
          { Result-Code }
          { Origin-Host }
          { Origin-Realm }
          { Auth-Application-Id }
          { CC-Request-Type }
          { CC-Request-Number }
        * [ Multiple-Services-Credit-Control ]
        * [ Proxy-Info ]
        * [ AVP ]
@enum CC-Request-Type
   INITIAL_REQUEST 1
   UPDATE_REQUEST 2
   TERMINATION_REQUEST 3
   EVENT_REQUEST 4
@enum Subscription-Id-Type
   END_USER_E164 0
   END_USER_IMSI 1
   END_USER_SIP_URI 2
   END_USER_NAI 3
   END_USER_PRIVATE 4
@enum Multiple-Services-Indicator
   MULTIPLE_SERVICES_NOT_SUPPORTED 0
   MULTIPLE_SERVICES_SUPPORTED 1
@enum User-Equipment-Info-Type
   IMEISV 0
   MAC 1
   EUI64 2
   MODIFIED_EUI64 3
">>).

-define(CC_APP, 4).
-define(VENDOR_3GPP, 10415).

main(Args) ->
    O = parse(Args, #{}),
    load_dict(),
    ok = diameter:start(),
    Host = opt(host, O, "ocs.test.local"),
    Realm = opt(realm, O, "test.local"),
    ok = diameter:start_service(svc, service(Host, Realm)),
    Port = iopt(port, O, 3868),
    {ok, _} = diameter:add_transport(svc, {listen, [{transport_module, diameter_tcp},
        {transport_config, [{ip, {127,0,0,1}}, {port, Port}, {reuseaddr, true}]},
        {watchdog_config, [{okay, 0}]}]}),
    wait_listening(Port, 50),
    io:format("OCS ~s (realm ~s) listening 127.0.0.1:~p~n", [Host, Realm, Port]),
    timer:sleep(1000 * iopt(duration, O, 600)),
    io:format("duration elapsed, exiting~n"),
    halt(0).

wait_listening(Port, 0) -> io:format("listen failed on port ~p~n", [Port]), halt(1);
wait_listening(Port, N) ->
    case gen_tcp:connect({127,0,0,1}, Port, [], 200) of
        {ok, S} -> gen_tcp:close(S);
        _ -> timer:sleep(100), wait_listening(Port, N - 1)
    end.

parse(["--" ++ K, V | T], M) -> parse(T, M#{list_to_atom(K) => V});
parse([], M) -> M;
parse(_, _) -> io:format("usage: see the header of ro_ocs.escript~n"), halt(2).

opt(K, M, D) -> maps:get(K, M, D).
iopt(K, M, D) -> list_to_integer(opt(K, M, integer_to_list(D))).

load_dict() ->
    {ok, [Forms | _]} = diameter_make:codec(?CC_DIA, [return, forms]),
    {ok, Mod, Bin} = compile:forms(Forms, [binary, return_errors]),
    {module, Mod} = code:load_binary(Mod, "cc_dict.erl", Bin).

service(Host, Realm) ->
    [{'Origin-Host', Host}, {'Origin-Realm', Realm},
     {'Vendor-Id', 0}, {'Product-Name', "ro-ocs-escript"},
     {'Host-IP-Address', [{127,0,0,1}]},
     {'Supported-Vendor-Id', [?VENDOR_3GPP]},
     {'Auth-Application-Id', [?CC_APP]},
     {decode_format, map}, {string_decode, false},
     %% the 3GPP AVPs with the M bit (Service-Information...) that `* [ AVP ]` takes: no 5001
     {strict_mbit, false},
     {application, [{alias, cc}, {dictionary, cc_dict}, {module, ?MODULE},
                    {answer_errors, callback}, {request_errors, callback}]}].

%% ---------------- diameter callbacks ----------------
peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer([Peer | _], _, _Svc, _State) -> {ok, Peer};
pick_peer([], _, _Svc, _State) -> false.
prepare_request(P, _Svc, _Peer) -> {send, P}.
prepare_retransmit(P, _Svc, _Peer) -> {send, P}.
handle_answer(#diameter_packet{} = P, _Req, _Svc, _Peer) -> {ok, P}.
handle_error(Reason, _Req, _Svc, _Peer) -> {error, Reason}.

%% The request's errors (e.g. 5001 for 3GPP AVPs with the M bit this dictionary leaves to
%% `* [ AVP ]`) are ignored on purpose: this OCS grants whatever is asked.
handle_request(#diameter_packet{msg = ['CCR' | Req]}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, _}, origin_realm = {OR, _}} = Caps,
    Mscc = [#{'Granted-Service-Unit' => [#{'CC-Time' => [60]}],
              'Rating-Group' => maps:get('Rating-Group', M, []),
              'Validity-Time' => [600], 'Result-Code' => [2001]}
            || M <- maps:get('Multiple-Services-Credit-Control', Req, [])],
    {reply, ['CCA' | #{'Session-Id' => maps:get('Session-Id', Req),
                       'Result-Code' => 2001,
                       'Origin-Host' => OH, 'Origin-Realm' => OR,
                       'Auth-Application-Id' => ?CC_APP,
                       'CC-Request-Type' => maps:get('CC-Request-Type', Req),
                       'CC-Request-Number' => maps:get('CC-Request-Number', Req),
                       'Multiple-Services-Credit-Control' => Mscc}]};
handle_request(#diameter_packet{}, _Svc, _Peer) ->
    {answer_message, 3001}.
