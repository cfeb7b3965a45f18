#!/usr/bin/env escript
%%! -smp enable
%% cx_cscf.escript -- the Cx client side of an I-CSCF / S-CSCF (3GPP TS 29.228 / 29.229) on
%% Erlang/OTP diameter, driven line by line, for the tests of an HSS written in a SIP script
%% (cfg-examples/roles/kamailio-hss.cfg). Loopback only; exits by itself after --duration.
%%
%%   cx_cscf.escript --connect PORT --ctl-port C [--host icscf.test.local] [--realm test.local]
%%                   [--dest-realm hss.test.local] [--duration 60]
%%
%% Control commands (one line each, one line back):
%%   up [SECONDS]                 -> "UP <peer host>" once the peer is up, or "ERROR not up"
%%   uar IMPI IMPU [type=N]       User-Authorization-Request (User-Authorization-Type N)
%%   mar IMPI IMPU SERVER [scheme=S]
%%                                Multimedia-Auth-Request for one SIP Digest vector
%%                                (3GPP-SIP-Authentication-Scheme S, default "SIP Digest")
%%   sar IMPI IMPU SERVER TYPE    Server-Assignment-Request (Server-Assignment-Type TYPE)
%%   lir IMPU                     Location-Info-Request
%% An answer comes back as one line
%%   "ANSWER cmd=<code> e=<0|1> rc=<Result-Code|0> exp=<Experimental-Result-Code|0>
%%    server=<Server-Name|-> caps=<Server-Names in Server-Capabilities, comma-separated|->
%%    mcap=<Mandatory-Capabilities|-> user=<User-Name|-> scheme=<auth scheme, spaces as _|->
%%    ha1=<Digest-HA1|-> drealm=<Digest-Realm|-> qop=<Digest-QoP|-> items=<n|-1>
%%    udimpu=<1 when User-Data names the IMPU, 0 when it does not, -1 when absent>
%%    vsai=<Vendor-Id/Auth-Application-Id of Vendor-Specific-Application-Id|->
%%    ass=<Auth-Session-State|-1> sid=<Session-Id>"
%% a failure as "ERROR <reason>". This peer's codec is strict about what the answer ABNF
%% requires ({ Vendor-Specific-Application-Id }, { Auth-Session-State }): an answer that lacks
%% them is reported as "ANSWER ... undecoded", which the tests treat as a failure.
-mode(compile).
-export([main/1, peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

-include_lib("diameter/include/diameter.hrl").

-define(CX_DIA, <<"
@id 16777216
@name cx_cscf_dict
@prefix cxc
@vendor 10415 3GPP
@inherits diameter_gen_base_rfc6733
@avp_types
   Digest-Realm 104 UTF8String M
   Digest-QoP 110 UTF8String M
   Digest-Algorithm 111 UTF8String M
   Digest-HA1 121 UTF8String M
   Visited-Network-Identifier 600 OctetString MV
   Public-Identity 601 UTF8String MV
   Server-Name 602 UTF8String MV
   Server-Capabilities 603 Grouped MV
   Mandatory-Capability 604 Unsigned32 MV
   Optional-Capability 605 Unsigned32 MV
   User-Data 606 OctetString MV
   SIP-Number-Auth-Items 607 Unsigned32 MV
   SIP-Authentication-Scheme 608 UTF8String MV
   SIP-Auth-Data-Item 612 Grouped MV
   SIP-Item-Number 613 Unsigned32 MV
   Server-Assignment-Type 614 Enumerated MV
   User-Authorization-Type 623 Enumerated MV
   User-Data-Already-Available 624 Enumerated MV
   SIP-Digest-Authenticate 635 Grouped V
@grouped
   Server-Capabilities ::= < AVP Header: 603 >
        * [ Mandatory-Capability ]
        * [ Optional-Capability ]
        * [ Server-Name ]
        * [ AVP ]
   SIP-Auth-Data-Item ::= < AVP Header: 612 >
          [ SIP-Item-Number ]
          [ SIP-Authentication-Scheme ]
          [ SIP-Digest-Authenticate ]
        * [ AVP ]
   SIP-Digest-Authenticate ::= < AVP Header: 635 >
          { Digest-Realm }
          { Digest-QoP }
          { Digest-HA1 }
          [ Digest-Algorithm ]
        * [ AVP ]
@messages
   UAR ::= < Diameter Header: 300, REQ, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { User-Name }
          { Public-Identity }
          { Visited-Network-Identifier }
          [ User-Authorization-Type ]
        * [ AVP ]
   UAA ::= < Diameter Header: 300, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          [ Result-Code ]
          [ Experimental-Result ]
          [ Server-Name ]
          [ Server-Capabilities ]
        * [ AVP ]
   SAR ::= < Diameter Header: 301, REQ, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { Server-Name }
          { Server-Assignment-Type }
          { User-Data-Already-Available }
          [ User-Name ]
        * [ Public-Identity ]
        * [ AVP ]
   SAA ::= < Diameter Header: 301, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          [ Result-Code ]
          [ Experimental-Result ]
          [ User-Name ]
          [ User-Data ]
          [ Server-Name ]
        * [ AVP ]
   LIR ::= < Diameter Header: 302, REQ, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { Public-Identity }
        * [ AVP ]
   LIA ::= < Diameter Header: 302, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          [ Result-Code ]
          [ Experimental-Result ]
          [ Server-Name ]
          [ Server-Capabilities ]
        * [ AVP ]
   MAR ::= < Diameter Header: 303, REQ, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { User-Name }
          { Public-Identity }
          { SIP-Auth-Data-Item }
          { SIP-Number-Auth-Items }
          { Server-Name }
        * [ AVP ]
   MAA ::= < Diameter Header: 303, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          [ Result-Code ]
          [ Experimental-Result ]
          [ User-Name ]
          [ Public-Identity ]
          [ SIP-Number-Auth-Items ]
        * [ SIP-Auth-Data-Item ]
          [ Server-Name ]
        * [ AVP ]
@enum Server-Assignment-Type
   NO_ASSIGNMENT 0
   REGISTRATION 1
   RE_REGISTRATION 2
   UNREGISTERED_USER 3
   TIMEOUT_DEREGISTRATION 4
   USER_DEREGISTRATION 5
   ADMINISTRATIVE_DEREGISTRATION 6
   AUTHENTICATION_FAILURE 7
   AUTHENTICATION_TIMEOUT 8
   DEREGISTRATION_TOO_MUCH_DATA 9
   AAA_USER_DATA_REQUEST 10
   PGW_UPDATE_REQUEST 11
   RESTORATION 12
@enum User-Authorization-Type
   REGISTRATION 0
   DE_REGISTRATION 1
   REGISTRATION_AND_CAPABILITIES 2
@enum User-Data-Already-Available
   USER_DATA_NOT_AVAILABLE 0
   USER_DATA_ALREADY_AVAILABLE 1
">>).

-define(VENDOR_3GPP, 10415).
-define(CX_APP, 16777216).

main(Args) ->
    O = parse(Args, #{}),
    load_dict(),
    ok = diameter:start(),
    Host = opt(host, O, "icscf.test.local"),
    Realm = opt(realm, O, "test.local"),
    ets:new(cscf, [named_table, public, set]),
    ets:insert(cscf, {peers, []}),
    ets:insert(cscf, {dest_realm, list_to_binary(opt('dest-realm', O, "hss.test.local"))}),
    ok = diameter:start_service(svc, service(Host, Realm)),
    true = diameter:subscribe(svc),
    Port = iopt(connect, O, 3868),
    {ok, _} = diameter:add_transport(svc, {connect, [{transport_module, diameter_tcp},
        {transport_config, [{raddr, {127,0,0,1}}, {rport, Port}, {ip, {127,0,0,1}}]},
        {connect_timer, 1000}, {watchdog_config, [{okay, 0}]}]}),
    {ok, L} = gen_tcp:listen(iopt('ctl-port', O, 3872),
                             [list, {packet, line}, {active, false}, {reuseaddr, true},
                              {ip, {127,0,0,1}}]),
    out("CSCF ~s (realm ~s) connecting to 127.0.0.1:~p, control 127.0.0.1:~s",
        [Host, Realm, Port, opt('ctl-port', O, "3872")]),
    spawn(fun() -> accept(L) end),
    Deadline = erlang:monotonic_time(millisecond) + 1000 * iopt(duration, O, 60),
    events(Deadline).

parse(["--" ++ K, V | T], M) -> parse(T, M#{list_to_atom(K) => V});
parse([], M) -> M;
parse(_, _) -> io:format("usage: see the header of cx_cscf.escript~n"), halt(2).

opt(K, M, D) -> maps:get(K, M, D).
iopt(K, M, D) -> list_to_integer(opt(K, M, integer_to_list(D))).

out(Fmt, Args) -> io:format(Fmt ++ "~n", Args).

load_dict() ->
    {ok, [Forms | _]} = diameter_make:codec(?CX_DIA, [return, forms]),
    {ok, Mod, Bin} = compile:forms(Forms, [binary, return_errors]),
    {module, Mod} = code:load_binary(Mod, "cx_cscf_dict.erl", Bin).

service(Host, Realm) ->
    [{'Origin-Host', Host}, {'Origin-Realm', Realm},
     {'Vendor-Id', 0}, {'Product-Name', "cx-cscf-escript"},
     {'Host-IP-Address', [{127,0,0,1}]},
     {'Supported-Vendor-Id', [?VENDOR_3GPP]},
     {'Vendor-Specific-Application-Id',
      [[{'Vendor-Id', ?VENDOR_3GPP}, {'Auth-Application-Id', [?CX_APP]}]]},
     {decode_format, map}, {string_decode, false},
     {application, [{alias, cx}, {dictionary, cx_cscf_dict}, {module, ?MODULE},
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
            ets:insert(cscf, {peers, [Peer]}),
            out("PEER up ~s", [Peer]),
            events(Deadline);
        #diameter_event{info = Info} when element(1, Info) == down ->
            ets:insert(cscf, {peers, []}),
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
    put(impu, ""),
    case gen_tcp:recv(S, 0) of
        {ok, Line} ->
            Reply = try command(string:tokens(string:trim(Line), " "))
                    catch C:R -> io_lib:format("ERROR ~p:~0p", [C, R]) end,
            gen_tcp:send(S, [Reply, "\n"]),
            control(S);
        _ -> gen_tcp:close(S)
    end.

opts(Opts) -> maps:from_list([list_to_tuple(string:split(X, "=")) || X <- Opts]).

command(["up"]) -> command(["up", "10"]);
command(["up", Secs]) -> wait_up(list_to_integer(Secs) * 10);
command(["uar", Impi, Impu | Opts]) ->
    put(impu, Impu),
    O = opts(Opts),
    call(['UAR' | common() ++
          [{'User-Name', Impi},
           {'Public-Identity', Impu},
           {'Visited-Network-Identifier', <<"test.local">>},
           {'User-Authorization-Type', [list_to_integer(maps:get("type", O, "0"))]}]]);
command(["mar", Impi, Impu, Server | Opts]) ->
    put(impu, Impu),
    O = opts(Opts),
    call(['MAR' | common() ++
          [{'User-Name', Impi},
           {'Public-Identity', Impu},
           {'SIP-Auth-Data-Item',
            #{'SIP-Authentication-Scheme' => [maps:get("scheme", O, "SIP Digest")]}},
           {'SIP-Number-Auth-Items', 1},
           {'Server-Name', Server}]]);
command(["sar", Impi, Impu, Server, Type]) ->
    put(impu, Impu),
    call(['SAR' | common() ++
          [{'User-Name', [Impi]},
           {'Public-Identity', [Impu]},
           {'Server-Name', Server},
           {'Server-Assignment-Type', list_to_integer(Type)},
           {'User-Data-Already-Available', 0}]]);
command(["lir", Impu]) ->
    put(impu, Impu),
    call(['LIR' | common() ++ [{'Public-Identity', Impu}]]);
command(Other) -> io_lib:format("ERROR unknown command ~p", [Other]).

common() ->
    [{dest_realm, DR}] = ets:lookup(cscf, dest_realm),
    [{'Session-Id', diameter:session_id("cscf.test.local")},
     {'Vendor-Specific-Application-Id',
      #{'Vendor-Id' => ?VENDOR_3GPP, 'Auth-Application-Id' => [?CX_APP]}},
     {'Auth-Session-State', 1},
     {'Destination-Realm', DR}].

wait_up(0) -> "ERROR not up";
wait_up(N) ->
    case ets:lookup(cscf, peers) of
        [{peers, [P | _]}] -> "UP " ++ P;
        _ -> timer:sleep(100), wait_up(N - 1)
    end.

call(Msg) ->
    case diameter:call(svc, cx, Msg, [{timeout, 5000}]) of
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

str(B) when is_binary(B) -> binary_to_list(B);
str(L) when is_list(L) -> L;
str(I) when is_integer(I) -> integer_to_list(I).

%% "SIP Digest" -> "SIP_Digest": one field of the space-separated answer line
nospace(S) -> lists:flatten(string:replace(S, " ", "_", all)).

csv([]) -> "-";
csv(L) -> lists:join(",", [str(X) || X <- L]).

describe(#diameter_packet{header = H, msg = [_Name | Map], errors = []}) when is_map(Map) ->
    E = case H#diameter_header.is_error of true -> 1; _ -> 0 end,
    Exp = one('Experimental-Result-Code', one('Experimental-Result', Map, #{}), 0),
    Caps = one('Server-Capabilities', Map, #{}),
    Item = one('SIP-Auth-Data-Item', Map, #{}),
    Dig = one('SIP-Digest-Authenticate', Item, #{}),
    Impu = binary_to_list(iolist_to_binary(get(impu))),
    Ud = case one('User-Data', Map, none) of
             none -> -1;
             Xml -> case string:find(binary_to_list(iolist_to_binary(Xml)), Impu) of
                        nomatch -> 0;
                        _ -> 1
                    end
         end,
    Vsai = case one('Vendor-Specific-Application-Id', Map, none) of
               #{'Vendor-Id' := V, 'Auth-Application-Id' := [A]} ->
                   io_lib:format("~p/~p", [V, A]);
               _ -> "-"
           end,
    io_lib:format("ANSWER cmd=~p e=~p rc=~p exp=~p server=~s caps=~s mcap=~s user=~s "
                  "scheme=~s ha1=~s drealm=~s qop=~s items=~p udimpu=~p vsai=~s ass=~p sid=~s",
                  [H#diameter_header.cmd_code, E, one('Result-Code', Map, 0), Exp,
                   str(one('Server-Name', Map, "-")),
                   csv(maps:get('Server-Name', Caps, [])),
                   csv(maps:get('Mandatory-Capability', Caps, [])),
                   str(one('User-Name', Map, "-")),
                   nospace(str(one('SIP-Authentication-Scheme', Item, "-"))),
                   str(one('Digest-HA1', Dig, "-")),
                   str(one('Digest-Realm', Dig, "-")),
                   str(one('Digest-QoP', Dig, "-")),
                   one('SIP-Number-Auth-Items', Map, -1), Ud, Vsai,
                   one('Auth-Session-State', Map, -1),
                   one('Session-Id', Map, <<>>)]);
describe(#diameter_packet{header = H, errors = Errs}) ->
    io_lib:format("ANSWER cmd=~p undecoded ~0p", [H#diameter_header.cmd_code, Errs]).

%% ---------------- diameter callbacks ----------------
peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer([Peer | _], _, _Svc, _State) -> {ok, Peer};
pick_peer([], _, _Svc, _State) -> false.

%% Adds this node's Origin-Host/Realm.
prepare_request(#diameter_packet{msg = [Name | Avps]}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, _}, origin_realm = {OR, _}} = Caps,
    {send, [Name, {'Origin-Host', OH}, {'Origin-Realm', OR} | Avps]}.

prepare_retransmit(P, Svc, Peer) -> prepare_request(P, Svc, Peer).
handle_answer(#diameter_packet{} = P, _Req, _Svc, _Peer) -> {ok, P}.
handle_error(Reason, _Req, _Svc, _Peer) -> {error, Reason}.

handle_request(#diameter_packet{header = H}, _Svc, _Peer) ->
    out("REQUEST cmd=~p not served here: 3001", [H#diameter_header.cmd_code]),
    {answer_message, 3001}.
