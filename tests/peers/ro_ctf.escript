#!/usr/bin/env escript
%%! -smp enable
%% ro_ctf.escript -- a Credit-Control client (RFC 4006 / 3GPP TS 32.299 Ro, application 4) on
%% Erlang/OTP diameter: the charging trigger function of a SIP node, driven line by line,
%% for the tests of Diameter servers written in a SIP script (an OCS in a Kamailio cfg).
%% Loopback only; exits by itself after --duration.
%%
%%   ro_ctf.escript --connect PORT --ctl-port C [--host ctf.test.local] [--realm test.local]
%%                  [--dest-realm ocs.test.local] [--duration 60]
%%
%% Control commands (one line each, one line back):
%%   up [SECONDS]           -> "UP <peer host>" once the peer is up, or "ERROR not up"
%%   ccr TAG TYPE NUM SUBSCRIBER [req=S] [used=S] [tariff=N] [rg=N]
%%        TYPE: initial | update | terminate | event (CC-Request-Type 1..4); NUM: the
%%        CC-Request-Number. The Session-Id is one per TAG (the first ccr of a TAG makes it).
%%        Subscription-Id = END_USER_E164 SUBSCRIBER; req/used: Requested-/Used-Service-Unit
%%        CC-Time in seconds, inside one Multiple-Services-Credit-Control with Rating-Group
%%        rg (default 1); tariff: the vendor AVP Acme-Tariff-Class (vendor 99999, code 1001,
%%        a vendor dictionary the OCS loads: cfg-examples/roles/acme.dict).
%% An answer comes back as
%%   "ANSWER e=<0|1> rc=<Result-Code|0> type=<CC-Request-Type> num=<CC-Request-Number>
%%    gsu=<Granted-Service-Unit CC-Time in the MSCC, or -1> mscc_rc=<MSCC Result-Code|0>
%%    fua=<Final-Unit-Action|-1> balance=<Acme-Balance|-1> sid=<Session-Id>"
%% a failure as "ERROR <reason>".
-mode(compile).
-export([main/1, peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

-include_lib("diameter/include/diameter.hrl").

%% RFC 4006 §3.1/3.2 (CCR/CCA) with the AVPs this client uses; the answer lists everything as
%% optional so whatever the OCS sends is decoded and reported, not refused by this peer.
-define(RO_DIA, <<"
@id 4
@name ro_ctf_dict
@prefix ro
@vendor 99999 Acme
@inherits diameter_gen_base_rfc6733
@avp_types
   CC-Request-Number 415 Unsigned32 M
   CC-Request-Type 416 Enumerated M
   CC-Time 420 Unsigned32 M
   Final-Unit-Indication 430 Grouped M
   Granted-Service-Unit 431 Grouped M
   Rating-Group 432 Unsigned32 M
   Requested-Service-Unit 437 Grouped M
   Subscription-Id 443 Grouped M
   Subscription-Id-Data 444 UTF8String M
   Used-Service-Unit 446 Grouped M
   Validity-Time 448 Unsigned32 M
   Final-Unit-Action 449 Enumerated M
   Subscription-Id-Type 450 Enumerated M
   Multiple-Services-Indicator 455 Enumerated M
   Multiple-Services-Credit-Control 456 Grouped M
   Service-Context-Id 461 UTF8String M
   Acme-Tariff-Class 1001 Unsigned32 V
   Acme-Balance 1002 Unsigned32 V
@grouped
   Subscription-Id ::= < AVP Header: 443 >
          { Subscription-Id-Type }
          { Subscription-Id-Data }
   Requested-Service-Unit ::= < AVP Header: 437 >
          [ CC-Time ]
        * [ AVP ]
   Used-Service-Unit ::= < AVP Header: 446 >
          [ CC-Time ]
        * [ AVP ]
   Granted-Service-Unit ::= < AVP Header: 431 >
          [ CC-Time ]
        * [ AVP ]
   Final-Unit-Indication ::= < AVP Header: 430 >
          { Final-Unit-Action }
        * [ AVP ]
   Multiple-Services-Credit-Control ::= < AVP Header: 456 >
          [ Granted-Service-Unit ]
          [ Requested-Service-Unit ]
        * [ Used-Service-Unit ]
          [ Rating-Group ]
          [ Validity-Time ]
          [ Result-Code ]
          [ Final-Unit-Indication ]
        * [ AVP ]
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
        * [ Subscription-Id ]
          [ Multiple-Services-Indicator ]
        * [ Multiple-Services-Credit-Control ]
          [ Acme-Tariff-Class ]
        * [ AVP ]
   CCA ::= < Diameter Header: 272, PXY >
          < Session-Id >
          [ Result-Code ]
          [ Origin-Host ]
          [ Origin-Realm ]
          [ Auth-Application-Id ]
          [ CC-Request-Type ]
          [ CC-Request-Number ]
        * [ Multiple-Services-Credit-Control ]
          [ Acme-Balance ]
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
@enum Final-Unit-Action
   TERMINATE 0
   REDIRECT 1
   RESTRICT_ACCESS 2
">>).

-define(CC_APP, 4).

main(Args) ->
    O = parse(Args, #{}),
    load_dict(),
    ok = diameter:start(),
    Host = opt(host, O, "ctf.test.local"),
    Realm = opt(realm, O, "test.local"),
    ets:new(ctf, [named_table, public, set]),
    ets:insert(ctf, {peers, []}),
    ets:insert(ctf, {dest_realm, list_to_binary(opt('dest-realm', O, "ocs.test.local"))}),
    ok = diameter:start_service(svc, service(Host, Realm)),
    true = diameter:subscribe(svc),
    Port = iopt(connect, O, 3868),
    {ok, _} = diameter:add_transport(svc, {connect, [{transport_module, diameter_tcp},
        {transport_config, [{raddr, {127,0,0,1}}, {rport, Port}, {ip, {127,0,0,1}}]},
        {connect_timer, 1000}, {watchdog_config, [{okay, 0}]}]}),
    {ok, L} = gen_tcp:listen(iopt('ctl-port', O, 3871),
                             [list, {packet, line}, {active, false}, {reuseaddr, true},
                              {ip, {127,0,0,1}}]),
    out("CTF ~s (realm ~s) connecting to 127.0.0.1:~p, control 127.0.0.1:~s",
        [Host, Realm, Port, opt('ctl-port', O, "3871")]),
    spawn(fun() -> accept(L) end),
    Deadline = erlang:monotonic_time(millisecond) + 1000 * iopt(duration, O, 60),
    events(Deadline).

parse(["--" ++ K, V | T], M) -> parse(T, M#{list_to_atom(K) => V});
parse([], M) -> M;
parse(_, _) -> io:format("usage: see the header of ro_ctf.escript~n"), halt(2).

opt(K, M, D) -> maps:get(K, M, D).
iopt(K, M, D) -> list_to_integer(opt(K, M, integer_to_list(D))).

out(Fmt, Args) -> io:format(Fmt ++ "~n", Args).

load_dict() ->
    {ok, [Forms | _]} = diameter_make:codec(?RO_DIA, [return, forms]),
    {ok, Mod, Bin} = compile:forms(Forms, [binary, return_errors]),
    {module, Mod} = code:load_binary(Mod, "ro_ctf_dict.erl", Bin).

service(Host, Realm) ->
    [{'Origin-Host', Host}, {'Origin-Realm', Realm},
     {'Vendor-Id', 0}, {'Product-Name', "ro-ctf-escript"},
     {'Host-IP-Address', [{127,0,0,1}]},
     {'Auth-Application-Id', [?CC_APP]},
     {decode_format, map}, {string_decode, false},
     {application, [{alias, ro}, {dictionary, ro_ctf_dict}, {module, ?MODULE},
                    {answer_errors, callback}, {request_errors, callback}]}].

events(Deadline) ->
    Left = Deadline - erlang:monotonic_time(millisecond),
    case Left =< 0 of
        true -> out("duration elapsed, exiting", []), halt(0);
        false -> ok
    end,
    receive
        #diameter_event{info = Info} when element(1, Info) == up ->
            {_, Caps} = element(3, Info),
            Peer = peer_host(Caps),
            ets:insert(ctf, {peers, [Peer]}),
            out("PEER up ~s", [Peer]),
            events(Deadline);
        #diameter_event{info = Info} when element(1, Info) == down ->
            ets:insert(ctf, {peers, []}),
            out("PEER down", []),
            events(Deadline);
        _ -> events(Deadline)
    after min(Left, 1000) -> events(Deadline)
    end.

peer_host(#diameter_caps{origin_host = {_, DH}}) -> binary_to_list(iolist_to_binary(DH));
peer_host(_) -> "?".

%% ---------------- control port ----------------
accept(L) ->
    {ok, S} = gen_tcp:accept(L),
    spawn(fun() -> control(S) end),
    accept(L).

control(S) ->
    case gen_tcp:recv(S, 0) of
        {ok, Line} ->
            Reply = try command(string:tokens(string:trim(Line), " "))
                    catch C:R -> io_lib:format("ERROR ~p:~0p", [C, R]) end,
            gen_tcp:send(S, [Reply, "\n"]),
            control(S);
        _ -> gen_tcp:close(S)
    end.

command(["up"]) -> command(["up", "10"]);
command(["up", Secs]) -> wait_up(list_to_integer(Secs) * 10);
command(["ccr", Tag, Type, Num, Sub | Opts]) ->
    O = maps:from_list([list_to_tuple(string:split(X, "=")) || X <- Opts]),
    Int = fun(K) -> list_to_integer(maps:get(K, O)) end,
    Unit = fun(K) -> case maps:is_key(K, O) of
                         true -> [#{'CC-Time' => [Int(K)]}];
                         false -> []
                     end end,
    Mscc = #{'Rating-Group' => [list_to_integer(maps:get("rg", O, "1"))],
             'Requested-Service-Unit' => Unit("req"),
             'Used-Service-Unit' => Unit("used")},
    Tariff = case maps:is_key("tariff", O) of
                 true -> [{'Acme-Tariff-Class', [Int("tariff")]}];
                 false -> []
             end,
    [{dest_realm, DR}] = ets:lookup(ctf, dest_realm),
    call(['CCR',
          {'Session-Id', session(Tag)},
          {'Destination-Realm', DR},
          {'Auth-Application-Id', ?CC_APP},
          {'Service-Context-Id', <<"32260@3gpp.org">>},
          {'CC-Request-Type', type(Type)},
          {'CC-Request-Number', list_to_integer(Num)},
          {'Subscription-Id', [#{'Subscription-Id-Type' => 0,
                                 'Subscription-Id-Data' => list_to_binary(Sub)}]},
          {'Multiple-Services-Indicator', [1]},
          {'Multiple-Services-Credit-Control', [Mscc]}
          | Tariff]);
command(Other) -> io_lib:format("ERROR unknown command ~p", [Other]).

type("initial") -> 1;
type("update") -> 2;
type("terminate") -> 3;
type("event") -> 4.

session(Tag) ->
    case ets:lookup(ctf, {sid, Tag}) of
        [{_, Sid}] -> Sid;
        [] -> Sid = diameter:session_id("ctf.test.local"),
              ets:insert(ctf, {{sid, Tag}, Sid}),
              Sid
    end.

wait_up(0) -> "ERROR not up";
wait_up(N) ->
    case ets:lookup(ctf, peers) of
        [{peers, [P | _]}] -> "UP " ++ P;
        _ -> timer:sleep(100), wait_up(N - 1)
    end.

call(Msg) ->
    case diameter:call(svc, ro, Msg, [{timeout, 5000}]) of
        {ok, #diameter_packet{} = P} -> describe(P);
        {error, R} -> io_lib:format("ERROR ~0p", [R]);
        Other -> io_lib:format("ERROR ~0p", [Other])
    end.

one(K, M, D) ->
    case maps:get(K, M, []) of
        [V | _] -> V;
        [] -> D;
        V -> V
    end.

describe(#diameter_packet{header = H, msg = [_Name | Map]}) when is_map(Map) ->
    E = case H#diameter_header.is_error of true -> 1; _ -> 0 end,
    Mscc = one('Multiple-Services-Credit-Control', Map, #{}),
    Gsu = one('CC-Time', one('Granted-Service-Unit', Mscc, #{}), -1),
    Fua = one('Final-Unit-Action', one('Final-Unit-Indication', Mscc, #{}), -1),
    io_lib:format("ANSWER e=~p rc=~p type=~p num=~p gsu=~p mscc_rc=~p fua=~p balance=~p sid=~s",
                  [E, one('Result-Code', Map, 0), one('CC-Request-Type', Map, 0),
                   one('CC-Request-Number', Map, -1), Gsu, one('Result-Code', Mscc, 0), Fua,
                   one('Acme-Balance', Map, -1), one('Session-Id', Map, <<>>)]);
describe(#diameter_packet{header = H, errors = Errs}) ->
    io_lib:format("ANSWER cmd=~p undecoded ~0p", [H#diameter_header.cmd_code, Errs]).

%% ---------------- diameter callbacks ----------------
peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer([Peer | _], _, _Svc, _State) -> {ok, Peer};
pick_peer([], _, _Svc, _State) -> false.

prepare_request(#diameter_packet{msg = [Name | Avps]}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, _}, origin_realm = {OR, _}} = Caps,
    {send, [Name, {'Origin-Host', OH}, {'Origin-Realm', OR} | Avps]}.

prepare_retransmit(P, Svc, Peer) -> prepare_request(P, Svc, Peer).
handle_answer(#diameter_packet{} = P, _Req, _Svc, _Peer) -> {ok, P}.
handle_error(Reason, _Req, _Svc, _Peer) -> {error, Reason}.

handle_request(#diameter_packet{header = H}, _Svc, _Peer) ->
    out("REQUEST cmd=~p not served here: 3001", [H#diameter_header.cmd_code]),
    {answer_message, 3001}.
