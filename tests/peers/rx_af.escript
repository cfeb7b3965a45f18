#!/usr/bin/env escript
%%! -smp enable
%% rx_af.escript -- the Rx client side of a P-CSCF (the "AF", 3GPP TS 29.214, application
%% 16777236) on Erlang/OTP diameter, driven line by line, for the tests of a PCRF written in a
%% SIP script (cfg-examples/roles/kamailio-pcrf.cfg). Loopback only; exits by itself after
%% --duration.
%%
%%   rx_af.escript --connect PORT --ctl-port C [--host pcscf.test.local] [--realm test.local]
%%                 [--dest-realm pcrf.test.local] [--duration 60]
%%
%% Control commands (one line each, one line back):
%%   up [SECONDS]                       -> "UP <peer host>" once the peer is up
%%   aar TAG SUBSCRIBER [type=N] [media=UL:DL,UL:DL...]
%%        AA-Request (Rx-Request-Type N, default 0 INITIAL) for the session TAG (one Session-Id
%%        per TAG, made by its first aar), Subscription-Id END_USER_SIP_URI SUBSCRIBER, one
%%        Media-Component-Description per UL:DL pair (Max-Requested-Bandwidth-UL/-DL, bit/s;
%%        the first is AUDIO, the others VIDEO)
%%   str TAG                            Session-Termination-Request (DIAMETER_LOGOUT)
%% An answer comes back as
%%   "ANSWER cmd=<code> e=<0|1> rc=<Result-Code|0> exp=<Experimental-Result-Code|0>
%%    app=<Auth-Application-Id|0> ass=<Auth-Session-State|-1>
%%    asi_ul=<Acceptable-Service-Info Max-Requested-Bandwidth-UL|-1> asi_dl=<...DL|-1>
%%    sid=<Session-Id>"
%% a failure as "ERROR <reason>". This peer's codec is strict about what the answer ABNF
%% requires ({ Auth-Application-Id } in an AAA): an answer without it is reported as
%% "ANSWER ... undecoded".
-mode(compile).
-export([main/1, peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

-include_lib("diameter/include/diameter.hrl").

-define(RX_DIA, <<"
@id 16777236
@name rx_af_dict
@prefix rx
@vendor 10415 3GPP
@inherits diameter_gen_base_rfc6733
@avp_types
   Subscription-Id 443 Grouped M
   Subscription-Id-Data 444 UTF8String M
   Subscription-Id-Type 450 Enumerated M
   Max-Requested-Bandwidth-DL 515 Unsigned32 MV
   Max-Requested-Bandwidth-UL 516 Unsigned32 MV
   Media-Component-Description 517 Grouped MV
   Media-Component-Number 518 Unsigned32 MV
   Media-Type 520 Enumerated MV
   Acceptable-Service-Info 526 Grouped MV
   Rx-Request-Type 533 Enumerated MV
@grouped
   Subscription-Id ::= < AVP Header: 443 >
          { Subscription-Id-Type }
          { Subscription-Id-Data }
   Media-Component-Description ::= < AVP Header: 517 >
          { Media-Component-Number }
          [ Media-Type ]
          [ Max-Requested-Bandwidth-UL ]
          [ Max-Requested-Bandwidth-DL ]
        * [ AVP ]
   Acceptable-Service-Info ::= < AVP Header: 526 >
        * [ Media-Component-Description ]
          [ Max-Requested-Bandwidth-DL ]
          [ Max-Requested-Bandwidth-UL ]
        * [ AVP ]
@messages
   AAR ::= < Diameter Header: 265, REQ, PXY >
          < Session-Id >
          { Auth-Application-Id }
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          [ Destination-Host ]
        * [ Media-Component-Description ]
        * [ Subscription-Id ]
          [ Rx-Request-Type ]
        * [ AVP ]
   AAA ::= < Diameter Header: 265, PXY >
          < Session-Id >
          { Auth-Application-Id }
          { Origin-Host }
          { Origin-Realm }
          [ Result-Code ]
          [ Experimental-Result ]
          [ Auth-Session-State ]
          [ Acceptable-Service-Info ]
        * [ AVP ]
   STR ::= < Diameter Header: 275, REQ, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { Auth-Application-Id }
          { Termination-Cause }
          [ Destination-Host ]
        * [ AVP ]
   STA ::= < Diameter Header: 275, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          [ Result-Code ]
        * [ AVP ]
@enum Subscription-Id-Type
   END_USER_E164 0
   END_USER_IMSI 1
   END_USER_SIP_URI 2
   END_USER_NAI 3
   END_USER_PRIVATE 4
@enum Media-Type
   AUDIO 0
   VIDEO 1
   DATA 2
   APPLICATION 3
@enum Rx-Request-Type
   INITIAL_REQUEST 0
   UPDATE_REQUEST 1
">>).

-define(RX_APP, 16777236).
-define(VENDOR_3GPP, 10415).

main(Args) ->
    O = parse(Args, #{}),
    load_dict(),
    ok = diameter:start(),
    Host = opt(host, O, "pcscf.test.local"),
    Realm = opt(realm, O, "test.local"),
    ets:new(af, [named_table, public, set]),
    ets:insert(af, {peers, []}),
    ets:insert(af, {dest_realm, list_to_binary(opt('dest-realm', O, "pcrf.test.local"))}),
    ok = diameter:start_service(svc, service(Host, Realm)),
    true = diameter:subscribe(svc),
    Port = iopt(connect, O, 3868),
    {ok, _} = diameter:add_transport(svc, {connect, [{transport_module, diameter_tcp},
        {transport_config, [{raddr, {127,0,0,1}}, {rport, Port}, {ip, {127,0,0,1}}]},
        {connect_timer, 1000}, {watchdog_config, [{okay, 0}]}]}),
    {ok, L} = gen_tcp:listen(iopt('ctl-port', O, 3873),
                             [list, {packet, line}, {active, false}, {reuseaddr, true},
                              {ip, {127,0,0,1}}]),
    out("AF ~s (realm ~s) connecting to 127.0.0.1:~p, control 127.0.0.1:~s",
        [Host, Realm, Port, opt('ctl-port', O, "3873")]),
    spawn(fun() -> accept(L) end),
    Deadline = erlang:monotonic_time(millisecond) + 1000 * iopt(duration, O, 60),
    events(Deadline).

parse(["--" ++ K, V | T], M) -> parse(T, M#{list_to_atom(K) => V});
parse([], M) -> M;
parse(_, _) -> io:format("usage: see the header of rx_af.escript~n"), halt(2).

opt(K, M, D) -> maps:get(K, M, D).
iopt(K, M, D) -> list_to_integer(opt(K, M, integer_to_list(D))).

out(Fmt, Args) -> io:format(Fmt ++ "~n", Args).

load_dict() ->
    {ok, [Forms | _]} = diameter_make:codec(?RX_DIA, [return, forms]),
    {ok, Mod, Bin} = compile:forms(Forms, [binary, return_errors]),
    {module, Mod} = code:load_binary(Mod, "rx_af_dict.erl", Bin).

service(Host, Realm) ->
    [{'Origin-Host', Host}, {'Origin-Realm', Realm},
     {'Vendor-Id', 0}, {'Product-Name', "rx-af-escript"},
     {'Host-IP-Address', [{127,0,0,1}]},
     {'Supported-Vendor-Id', [?VENDOR_3GPP]},
     {'Auth-Application-Id', [?RX_APP]},
     {decode_format, map}, {string_decode, false},
     {application, [{alias, rx}, {dictionary, rx_af_dict}, {module, ?MODULE},
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
            ets:insert(af, {peers, [Peer]}),
            out("PEER up ~s", [Peer]),
            events(Deadline);
        #diameter_event{info = Info} when element(1, Info) == down ->
            ets:insert(af, {peers, []}),
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
command(["aar", Tag, Sub | Opts]) ->
    O = maps:from_list([list_to_tuple(string:split(X, "=")) || X <- Opts]),
    Pairs = [string:split(P, ":") || P <- string:tokens(maps:get("media", O, ""), ",")],
    Mcds = [#{'Media-Component-Number' => N,
              'Media-Type' => [case N of 1 -> 0; _ -> 1 end],
              'Max-Requested-Bandwidth-UL' => [list_to_integer(Ul)],
              'Max-Requested-Bandwidth-DL' => [list_to_integer(Dl)]}
            || {N, [Ul, Dl]} <- lists:zip(lists:seq(1, length(Pairs)), Pairs)],
    [{dest_realm, DR}] = ets:lookup(af, dest_realm),
    call(['AAR',
          {'Session-Id', session(Tag)},
          {'Auth-Application-Id', ?RX_APP},
          {'Destination-Realm', DR},
          {'Media-Component-Description', Mcds},
          {'Subscription-Id', [#{'Subscription-Id-Type' => 2,
                                 'Subscription-Id-Data' => list_to_binary(Sub)}]},
          {'Rx-Request-Type', [list_to_integer(maps:get("type", O, "0"))]}]);
command(["str", Tag]) ->
    [{dest_realm, DR}] = ets:lookup(af, dest_realm),
    call(['STR',
          {'Session-Id', session(Tag)},
          {'Destination-Realm', DR},
          {'Auth-Application-Id', ?RX_APP},
          {'Termination-Cause', 1}]);
command(Other) -> io_lib:format("ERROR unknown command ~p", [Other]).

session(Tag) ->
    case ets:lookup(af, {sid, Tag}) of
        [{_, Sid}] -> Sid;
        [] -> Sid = diameter:session_id("pcscf.test.local"),
              ets:insert(af, {{sid, Tag}, Sid}),
              Sid
    end.

wait_up(0) -> "ERROR not up";
wait_up(N) ->
    case ets:lookup(af, peers) of
        [{peers, [P | _]}] -> "UP " ++ P;
        _ -> timer:sleep(100), wait_up(N - 1)
    end.

call(Msg) ->
    case diameter:call(svc, rx, Msg, [{timeout, 5000}]) of
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

describe(#diameter_packet{header = H, msg = [_Name | Map], errors = []}) when is_map(Map) ->
    E = case H#diameter_header.is_error of true -> 1; _ -> 0 end,
    Asi = one('Acceptable-Service-Info', Map, #{}),
    io_lib:format("ANSWER cmd=~p e=~p rc=~p exp=~p app=~p ass=~p asi_ul=~p asi_dl=~p sid=~s",
                  [H#diameter_header.cmd_code, E, one('Result-Code', Map, 0),
                   one('Experimental-Result-Code', one('Experimental-Result', Map, #{}), 0),
                   one('Auth-Application-Id', Map, 0), one('Auth-Session-State', Map, -1),
                   one('Max-Requested-Bandwidth-UL', Asi, -1),
                   one('Max-Requested-Bandwidth-DL', Asi, -1),
                   one('Session-Id', Map, <<>>)]);
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
