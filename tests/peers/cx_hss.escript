#!/usr/bin/env escript
%%! -smp enable
%% cx_hss.escript -- a Cx HSS (3GPP TS 29.229) on Erlang/OTP diameter, for dmbridge's
%% Kamailio end-to-end test and demo. Loopback only; exits by itself after --duration.
%%
%% It listens for the S-CSCF's Diameter node (the bridge connects to it, and reconnects after
%% a restart), answers every Server-Assignment-Request and Multimedia-Auth-Request (one SIP
%% Digest vector per subscriber of --subscribers), and sends Push-Profile,
%% Registration-Termination and User-Authorization requests when told to on a line-based
%% control port:
%%
%%   cx_hss.escript --port P --ctl-port C [--host hss.test.local] [--realm hss.test.local]
%%                  [--sar "bob=e5001,carol=5012"] [--uar ...] [--lir ...] [--scscf URI]
%%                  [--subscribers "alice:secret,..."] [--digest-realm test.local]
%%                  [--mar "bob=e5001,slow=drop"] [--duration 120]
%%
%% --sar: SAA outcome per user (the user part of User-Name); N = Result-Code N,
%%        eN = Experimental-Result (3GPP) N, drop = no answer; anyone else gets 2001.
%% --uar, --lir, --scscf URI: the I-CSCF's UAR and LIR (see handle_request): outcomes per user
%%        in the same form as --sar (e2002 = SUBSEQUENT_REGISTRATION with Server-Name).
%% --subscribers: USER:PASSWORD pairs (USER = the user part of User-Name); a MAR for one of
%%        them gets 2001 with one SIP Digest vector whose Digest-HA1 is
%%        MD5(User-Name ":" digest-realm ":" PASSWORD) (RFC 2617 §3.2.2.2, TS 29.229 §6.3.x
%%        SIP-Digest-Authenticate); anyone else Experimental-Result 5001 USER_UNKNOWN.
%% --mar: overrides per user, as --sar, plus USER=drop: the MAR is never answered (the
%%        S-CSCF's timeout path).
%%
%% Control commands (one line each, one line back):
%%   up [SECONDS]          -> "UP <peer host>" once a peer is up, or "ERROR not up"
%%   ppr USER              -> sends PPR (User-Data, Supported-Features, Charging-Information)
%%   rtr USER [IMPU ...]   -> sends RTR (Deregistration-Reason, Associated-Identities, IMPUs)
%%   uar USER IMPU         -> sends UAR (the example S-CSCF has no route for it)
%% An answer comes back as
%%   "ANSWER cmd=<code> e=<0|1> rc=<Result-Code|0> exp=<Experimental-Result-Code|0>
%%    assoc=<User-Names in Associated-Identities, comma-separated> sid=<Session-Id>"
%% a failure as "ERROR <reason>". Every SAR is printed on stdout as
%% "SAR user=<User-Name> impu=<Public-Identity> sat=<type> -> <outcome>", every MAR as
%% "MAR user=<User-Name> impu=<Public-Identity> scheme=<SIP-Authentication-Scheme, spaces as _>
%%  items=<SIP-Number-Auth-Items> server=<Server-Name> errors=<codec errors> -> <outcome>".
-mode(compile).
-export([main/1, peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

-include_lib("diameter/include/diameter.hrl").

%% The parts of Cx this HSS uses. Answers list most AVPs as optional so that whatever the
%% S-CSCF sends is decoded and reported, not refused by this peer's codec.
-define(CX_DIA, <<"
@id 16777216
@name cx_dict
@prefix cx
@vendor 10415 3GPP
@inherits diameter_gen_base_rfc6733
@avp_types
   Digest-Realm 104 UTF8String M
   Digest-QoP 110 UTF8String M
   Digest-Algorithm 111 UTF8String M
   Digest-HA1 121 UTF8String M
   SIP-Number-Auth-Items 607 Unsigned32 MV
   SIP-Authentication-Scheme 608 UTF8String MV
   SIP-Auth-Data-Item 612 Grouped MV
   SIP-Item-Number 613 Unsigned32 MV
   SIP-Digest-Authenticate 635 Grouped V
   Visited-Network-Identifier 600 OctetString MV
   Public-Identity 601 UTF8String MV
   Server-Name 602 UTF8String MV
   User-Data 606 OctetString MV
   Server-Assignment-Type 614 Enumerated MV
   Deregistration-Reason 615 Grouped MV
   Reason-Code 616 Enumerated MV
   Reason-Info 617 UTF8String MV
   Charging-Information 618 Grouped MV
   Primary-Event-Charging-Function-Name 619 DiameterURI MV
   Primary-Charging-Collection-Function-Name 621 DiameterURI MV
   User-Data-Already-Available 624 Enumerated MV
   Supported-Features 628 Grouped V
   Server-Capabilities 603 Grouped MV
   Mandatory-Capability 604 Unsigned32 MV
   Optional-Capability 605 Unsigned32 MV
   User-Authorization-Type 623 Enumerated MV
   Feature-List-ID 629 Unsigned32 V
   Feature-List 630 Unsigned32 V
   Associated-Identities 632 Grouped V
@grouped
   Server-Capabilities ::= < AVP Header: 603 >
        * [ Mandatory-Capability ]
        * [ Optional-Capability ]
        * [ Server-Name ]
        * [ AVP ]
   Deregistration-Reason ::= < AVP Header: 615 >
          { Reason-Code }
          [ Reason-Info ]
        * [ AVP ]
   Charging-Information ::= < AVP Header: 618 >
          [ Primary-Event-Charging-Function-Name ]
          [ Primary-Charging-Collection-Function-Name ]
        * [ AVP ]
   Supported-Features ::= < AVP Header: 628 >
          { Vendor-Id }
          { Feature-List-ID }
          { Feature-List }
        * [ AVP ]
   Associated-Identities ::= < AVP Header: 632 >
        * [ User-Name ]
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
   SAR ::= < Diameter Header: 301, REQ, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          [ Vendor-Specific-Application-Id ]
          [ Auth-Session-State ]
          [ Destination-Host ]
          [ Destination-Realm ]
          [ User-Name ]
        * [ Supported-Features ]
        * [ Public-Identity ]
          [ Server-Name ]
          [ Server-Assignment-Type ]
          [ User-Data-Already-Available ]
        * [ AVP ]
   SAA ::= < Diameter Header: 301, PXY >
          < Session-Id >
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          [ Vendor-Specific-Application-Id ]
          [ Result-Code ]
          [ Experimental-Result ]
          [ User-Name ]
          [ User-Data ]
          [ Charging-Information ]
        * [ AVP ]
   PPR ::= < Diameter Header: 305, REQ, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          { Destination-Host }
          { Destination-Realm }
          { User-Name }
        * [ Supported-Features ]
          [ User-Data ]
          [ Charging-Information ]
        * [ AVP ]
   PPA ::= < Diameter Header: 305, PXY >
          < Session-Id >
          [ Vendor-Specific-Application-Id ]
          [ Result-Code ]
          [ Experimental-Result ]
          [ Auth-Session-State ]
          [ Origin-Host ]
          [ Origin-Realm ]
        * [ Supported-Features ]
        * [ AVP ]
   RTR ::= < Diameter Header: 304, REQ, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          { Destination-Host }
          { Destination-Realm }
          { User-Name }
          { Deregistration-Reason }
          [ Associated-Identities ]
        * [ Supported-Features ]
        * [ Public-Identity ]
        * [ AVP ]
   RTA ::= < Diameter Header: 304, PXY >
          < Session-Id >
          [ Vendor-Specific-Application-Id ]
          [ Result-Code ]
          [ Experimental-Result ]
          [ Auth-Session-State ]
          [ Origin-Host ]
          [ Origin-Realm ]
          [ Associated-Identities ]
        * [ Supported-Features ]
        * [ AVP ]
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
          [ Destination-Host ]
          [ User-Authorization-Type ]
        * [ AVP ]
   UAA ::= < Diameter Header: 300, PXY >
          < Session-Id >
          [ Vendor-Specific-Application-Id ]
          [ Result-Code ]
          [ Experimental-Result ]
          [ Auth-Session-State ]
          [ Origin-Host ]
          [ Origin-Realm ]
          [ Server-Name ]
          [ Server-Capabilities ]
        * [ AVP ]
   LIR ::= < Diameter Header: 302, REQ, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { Public-Identity }
          [ Destination-Host ]
        * [ AVP ]
   LIA ::= < Diameter Header: 302, PXY >
          < Session-Id >
          [ Vendor-Specific-Application-Id ]
          [ Auth-Session-State ]
          [ Origin-Host ]
          [ Origin-Realm ]
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
          [ Destination-Host ]
        * [ Supported-Features ]
        * [ AVP ]
   MAA ::= < Diameter Header: 303, PXY >
          < Session-Id >
          [ Vendor-Specific-Application-Id ]
          [ Result-Code ]
          [ Experimental-Result ]
          [ Auth-Session-State ]
          [ Origin-Host ]
          [ Origin-Realm ]
          [ User-Name ]
          [ Public-Identity ]
          [ SIP-Number-Auth-Items ]
        * [ SIP-Auth-Data-Item ]
        * [ AVP ]
@enum Server-Assignment-Type
   NO_ASSIGNMENT 0
   REGISTRATION 1
   RE_REGISTRATION 2
   UNREGISTERED_USER 3
   TIMEOUT_DEREGISTRATION 4
   USER_DEREGISTRATION 5
   ADMINISTRATIVE_DEREGISTRATION 6
   TIMEOUT_DEREGISTRATION_STORE_SERVER_NAME 7
   USER_DEREGISTRATION_STORE_SERVER_NAME 8
   AUTHENTICATION_FAILURE 9
   AUTHENTICATION_TIMEOUT 10
   DEREGISTRATION_TOO_MUCH_DATA 11
   AAA_USER_DATA_REQUEST 12
   PGW_UPDATE 13
   RESTORATION 14
@enum User-Authorization-Type
   REGISTRATION 0
   DE_REGISTRATION 1
   REGISTRATION_AND_CAPABILITIES 2
@enum Reason-Code
   PERMANENT_TERMINATION 0
   NEW_SERVER_ASSIGNED 1
   SERVER_CHANGE 2
   REMOVE_S-CSCF 3
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
    Host = opt(host, O, "hss.test.local"),
    Realm = opt(realm, O, "hss.test.local"),
    ets:new(hss, [named_table, public, set]),
    ets:insert(hss, {sar, parse_sar(opt(sar, O, ""))}),
    ets:insert(hss, {uar, parse_sar(opt(uar, O, ""))}),
    ets:insert(hss, {lir, parse_sar(opt(lir, O, ""))}),
    ets:insert(hss, {mar, parse_sar(opt(mar, O, ""))}),
    ets:insert(hss, {subscribers, [list_to_tuple(string:split(E, ":"))
                                   || E <- string:tokens(opt(subscribers, O, ""), ",")]}),
    ets:insert(hss, {digest_realm, list_to_binary(opt('digest-realm', O, "test.local"))}),
    ets:insert(hss, {scscf, list_to_binary(opt(scscf, O, "sip:scscf.test.local"))}),
    ets:insert(hss, {peers, []}),
    ok = diameter:start_service(svc, service(Host, Realm)),
    true = diameter:subscribe(svc),
    Port = iopt(port, O, 3868),
    %% {okay, 0}: a peer that reconnects (a restarted bridge) is usable at once, instead of
    %% after the three watchdog exchanges of RFC 3539's REOPEN state (90 s with Tw = 30 s)
    {ok, _} = diameter:add_transport(svc, {listen, [{transport_module, diameter_tcp},
        {transport_config, [{ip, {127,0,0,1}}, {port, Port}, {reuseaddr, true}]},
        {watchdog_config, [{okay, 0}]}]}),
    {ok, L} = gen_tcp:listen(iopt('ctl-port', O, 3870),
                             [list, {packet, line}, {active, false}, {reuseaddr, true},
                              {ip, {127,0,0,1}}]),
    %% diameter_tcp retries a failed listen silently: check that the port really listens.
    wait_listening(Port, 50),
    out("HSS ~s (realm ~s) listening 127.0.0.1:~p, control 127.0.0.1:~s",
        [Host, Realm, Port, opt('ctl-port', O, "3870")]),
    spawn(fun() -> accept(L) end),
    Deadline = erlang:monotonic_time(millisecond) + 1000 * iopt(duration, O, 120),
    events(Deadline).

wait_listening(Port, 0) -> out("listen failed on port ~p", [Port]), halt(1);
wait_listening(Port, N) ->
    case gen_tcp:connect({127,0,0,1}, Port, [], 200) of
        {ok, S} -> gen_tcp:close(S);
        _ -> timer:sleep(100), wait_listening(Port, N - 1)
    end.

parse(["--" ++ K, V | T], M) -> parse(T, M#{list_to_atom(K) => V});
parse([], M) -> M;
parse(_, _) -> io:format("usage: see the header of cx_hss.escript~n"), halt(2).

opt(K, M, D) -> maps:get(K, M, D).
iopt(K, M, D) -> list_to_integer(opt(K, M, integer_to_list(D))).

%% "bob=e5001,carol=5012,dan=drop" -> [{"bob", {exp, 5001}}, {"carol", {rc, 5012}}, {"dan", drop}]
parse_sar(S) ->
    [case string:split(E, "=") of
         [U, "drop"] -> {U, drop};
         [U, "e" ++ C] -> {U, {exp, list_to_integer(C)}};
         [U, C] -> {U, {rc, list_to_integer(C)}}
     end || E <- string:tokens(S, ",")].

out(Fmt, Args) -> io:format(Fmt ++ "~n", Args).

load_dict() ->
    {ok, [Forms | _]} = diameter_make:codec(?CX_DIA, [return, forms]),
    {ok, Mod, Bin} = compile:forms(Forms, [binary, return_errors]),
    {module, Mod} = code:load_binary(Mod, "cx_dict.erl", Bin).

service(Host, Realm) ->
    [{'Origin-Host', Host}, {'Origin-Realm', Realm},
     {'Vendor-Id', 0}, {'Product-Name', "cx-hss-escript"},
     {'Host-IP-Address', [{127,0,0,1}]},
     {'Supported-Vendor-Id', [?VENDOR_3GPP]},
     {'Vendor-Specific-Application-Id',
      [[{'Vendor-Id', ?VENDOR_3GPP}, {'Auth-Application-Id', [?CX_APP]}]]},
     {decode_format, map}, {string_decode, false},
     {application, [{alias, cx}, {dictionary, cx_dict}, {module, ?MODULE},
                    {answer_errors, callback}, {request_errors, callback}]}].

%% Peer up/down events on stdout, until the deadline.
events(Deadline) ->
    Left = Deadline - erlang:monotonic_time(millisecond),
    case Left =< 0 of
        true -> out("duration elapsed, exiting", []), halt(0);
        false -> ok
    end,
    receive
        #diameter_event{info = Info} when element(1, Info) == up ->
            {_, Caps} = caps_of(Info),
            Peer = peer_host(Caps),
            ets:insert(hss, {peers, [Peer]}),
            out("PEER up ~s", [Peer]),
            events(Deadline);
        #diameter_event{info = Info} when element(1, Info) == down ->
            ets:insert(hss, {peers, []}),
            out("PEER down", []),
            events(Deadline);
        _ -> events(Deadline)
    after min(Left, 1000) -> events(Deadline)
    end.

%% {up, Ref, {PeerRef, Caps}, Config, Pkt} or {up, Ref, {PeerRef, Caps}, Config}
caps_of(Info) -> element(3, Info).

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
command(["ppr", User]) ->
    call(['PPR',
          {'Vendor-Specific-Application-Id', vsai()},
          {'Auth-Session-State', 1},
          {'User-Name', User},
          {'Supported-Features', [#{'Vendor-Id' => ?VENDOR_3GPP, 'Feature-List-ID' => 1,
                                    'Feature-List' => 1}]},
          {'User-Data', [profile(User)]},
          {'Charging-Information',
           [#{'Primary-Event-Charging-Function-Name' => [<<"aaa://ecf.test.local:3868">>],
              'Primary-Charging-Collection-Function-Name' => [<<"aaa://ccf.test.local:3868">>]}]}]);
command(["rtr", User | Impus]) ->
    call(['RTR',
          {'Vendor-Specific-Application-Id', vsai()},
          {'Auth-Session-State', 1},
          {'User-Name', User},
          {'Associated-Identities', [#{'User-Name' => [User]}]},
          {'Public-Identity', Impus},
          {'Deregistration-Reason', #{'Reason-Code' => 0,
                                      'Reason-Info' => [<<"subscription ended">>]}}]);
command(["uar", User, Impu]) ->
    call(['UAR',
          {'Vendor-Specific-Application-Id', vsai()},
          {'Auth-Session-State', 1},
          {'User-Name', User},
          {'Public-Identity', Impu},
          {'Visited-Network-Identifier', <<"test.local">>}]);
command(Other) -> io_lib:format("ERROR unknown command ~p", [Other]).

profile(User) ->
    iolist_to_binary(["<IMSSubscription><PrivateID>", User,
                      "</PrivateID><ServiceProfile><PublicIdentity><Identity>sip:", User,
                      "</Identity></PublicIdentity></ServiceProfile></IMSSubscription>"]).

vsai() -> #{'Vendor-Id' => ?VENDOR_3GPP, 'Auth-Application-Id' => [?CX_APP]}.

wait_up(0) -> "ERROR not up";
wait_up(N) ->
    case ets:lookup(hss, peers) of
        [{peers, [P | _]}] -> "UP " ++ P;
        _ -> timer:sleep(100), wait_up(N - 1)
    end.

call(Msg) ->
    case diameter:call(svc, cx, Msg, [{timeout, 5000}]) of
        {ok, #diameter_packet{} = P} -> describe(P);
        {error, R} -> io_lib:format("ERROR ~0p", [R]);
        Other -> io_lib:format("ERROR ~0p", [Other])
    end.

describe(#diameter_packet{header = H, msg = [_Name | Map]}) when is_map(Map) ->
    E = case H#diameter_header.is_error of true -> 1; _ -> 0 end,
    Rc = case maps:get('Result-Code', Map, []) of [C] -> C; C when is_integer(C) -> C; _ -> 0 end,
    Exp = case maps:get('Experimental-Result', Map, []) of
              [#{'Experimental-Result-Code' := X}] -> X;
              #{'Experimental-Result-Code' := X} -> X;
              _ -> 0
          end,
    Assoc = case maps:get('Associated-Identities', Map, []) of
                [#{'User-Name' := Us}] -> lists:join(",", Us);
                _ -> ""
            end,
    Sid = maps:get('Session-Id', Map, <<>>),
    io_lib:format("ANSWER cmd=~p e=~p rc=~p exp=~p assoc=~s sid=~s",
                  [H#diameter_header.cmd_code, E, Rc, Exp, Assoc, Sid]);
describe(#diameter_packet{header = H}) ->
    io_lib:format("ANSWER cmd=~p undecoded", [H#diameter_header.cmd_code]).

%% ---------------- diameter callbacks ----------------
peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer([Peer | _], _, _Svc, _State) -> {ok, Peer};
pick_peer([], _, _Svc, _State) -> false.

prepare_request(#diameter_packet{msg = [Name | Avps]}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, DH}, origin_realm = {OR, DR}} = Caps,
    {send, [Name, {'Session-Id', diameter:session_id(OH)}, {'Origin-Host', OH},
            {'Origin-Realm', OR}, {'Destination-Host', DH}, {'Destination-Realm', DR}
            | Avps]}.

prepare_retransmit(P, Svc, Peer) -> prepare_request(P, Svc, Peer).
handle_answer(#diameter_packet{} = P, _Req, _Svc, _Peer) -> {ok, P}.
handle_error(Reason, _Req, _Svc, _Peer) -> {error, Reason}.

handle_request(#diameter_packet{msg = ['SAR' | Req]}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, _}, origin_realm = {OR, _}} = Caps,
    User = case maps:get('User-Name', Req, []) of [U] -> binary_to_list(U); _ -> "" end,
    Impu = case maps:get('Public-Identity', Req, []) of [I | _] -> I; _ -> <<>> end,
    Sat = case maps:get('Server-Assignment-Type', Req, []) of [T] -> T; _ -> -1 end,
    [{sar, Table}] = ets:lookup(hss, sar),
    Local = hd(string:split(User, "@")),
    Outcome = proplists:get_value(Local, Table, {rc, 2001}),
    out("SAR user=~s impu=~s sat=~p -> ~s", [User, Impu, Sat, outcome(Outcome)]),
    Base = #{'Session-Id' => maps:get('Session-Id', Req), 'Auth-Session-State' => 1,
             'Origin-Host' => OH, 'Origin-Realm' => OR,
             'Vendor-Specific-Application-Id' => [vsai()],
             'User-Name' => [User]},
    case Outcome of
        drop -> discard;
        {rc, 2001} -> {reply, ['SAA' | Base#{'Result-Code' => [2001],
                                             'User-Data' => [profile(User)]}]};
        {rc, C} -> {reply, ['SAA' | Base#{'Result-Code' => [C]}]};
        {exp, C} -> {reply, ['SAA' | Base#{'Experimental-Result' =>
                                               [#{'Vendor-Id' => ?VENDOR_3GPP,
                                                  'Experimental-Result-Code' => C}]}]}
    end;
%% An I-CSCF's questions. UAR: DIAMETER_FIRST_REGISTRATION (Experimental-Result 2001) with
%% Server-Capabilities naming --scscf, unless --uar says otherwise for the user (e2002 =
%% DIAMETER_SUBSEQUENT_REGISTRATION with Server-Name). LIR: 2001 with Server-Name
%% --scscf unless --lir names an outcome for the user part of the Public-Identity.
handle_request(#diameter_packet{msg = [Cmd | Req]}, _Svc, {_, Caps})
  when Cmd == 'UAR'; Cmd == 'LIR' ->
    #diameter_caps{origin_host = {OH, _}, origin_realm = {OR, _}} = Caps,
    Impu = case maps:get('Public-Identity', Req, []) of
               [I | _] -> binary_to_list(iolist_to_binary(I));
               I when is_binary(I) -> binary_to_list(I);
               _ -> ""
           end,
    Local = hd(string:split(lists:last(string:split(Impu, ":")), "@")),
    [{scscf, Scscf}] = ets:lookup(hss, scscf),
    Key = case Cmd of 'UAR' -> uar; 'LIR' -> lir end,
    [{Key, Table}] = ets:lookup(hss, Key),
    Default = case Cmd of 'UAR' -> {exp, 2001}; 'LIR' -> {rc, 2001} end,
    Outcome = proplists:get_value(Local, Table, Default),
    out("~s impu=~s -> ~s", [Cmd, Impu, outcome(Outcome)]),
    Base = #{'Session-Id' => maps:get('Session-Id', Req), 'Auth-Session-State' => 1,
             'Origin-Host' => OH, 'Origin-Realm' => OR,
             'Vendor-Specific-Application-Id' => [vsai()]},
    Ans = case Outcome of
              {exp, 2001} ->
                  Base#{'Experimental-Result' => [#{'Vendor-Id' => ?VENDOR_3GPP,
                                                    'Experimental-Result-Code' => 2001}],
                        'Server-Capabilities' => [#{'Mandatory-Capability' => [1],
                                                    'Server-Name' => [Scscf]}]};
              {exp, 2002} ->
                  Base#{'Experimental-Result' => [#{'Vendor-Id' => ?VENDOR_3GPP,
                                                    'Experimental-Result-Code' => 2002}],
                        'Server-Name' => [Scscf]};
              {rc, 2001} -> Base#{'Result-Code' => [2001], 'Server-Name' => [Scscf]};
              {rc, C} -> Base#{'Result-Code' => [C]};
              {exp, C} -> Base#{'Experimental-Result' =>
                                    [#{'Vendor-Id' => ?VENDOR_3GPP,
                                       'Experimental-Result-Code' => C}]}
          end,
    {reply, [case Cmd of 'UAR' -> 'UAA'; 'LIR' -> 'LIA' end | Ans]};
%% The S-CSCF's MAR (TS 29.228 §6.3): one SIP Digest vector for a subscriber of --subscribers
%% (HA1 from the password), 5001 USER_UNKNOWN for anyone else, --mar overriding per user. The
%% MAR's ABNF marks what TS 29.229 §6.1.7 requires with { }: a missing one shows in errors=.
handle_request(#diameter_packet{msg = ['MAR' | Req], errors = Errs}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, _}, origin_realm = {OR, _}} = Caps,
    User = str(maps:get('User-Name', Req, <<>>)),
    Impu = str(maps:get('Public-Identity', Req, <<>>)),
    Item = case maps:get('SIP-Auth-Data-Item', Req, #{}) of M when is_map(M) -> M; _ -> #{} end,
    Scheme = str(maps:get('SIP-Authentication-Scheme', Item, <<>>)),
    Local = hd(string:split(User, "@")),
    [{mar, Table}] = ets:lookup(hss, mar),
    [{subscribers, Subs}] = ets:lookup(hss, subscribers),
    [{digest_realm, Realm}] = ets:lookup(hss, digest_realm),
    Default = case proplists:get_value(Local, Subs) of
                  undefined -> {exp, 5001};
                  Pw -> {vector, Pw}
              end,
    Outcome = proplists:get_value(Local, Table, Default),
    out("MAR user=~s impu=~s scheme=~s items=~p server=~s errors=~0p -> ~s",
        [User, Impu, lists:flatten(string:replace(Scheme, " ", "_", all)),
         maps:get('SIP-Number-Auth-Items', Req, -1), str(maps:get('Server-Name', Req, <<>>)),
         Errs, case Outcome of {vector, _} -> "vector"; _ -> outcome(Outcome) end]),
    Base = #{'Session-Id' => maps:get('Session-Id', Req), 'Auth-Session-State' => 1,
             'Origin-Host' => OH, 'Origin-Realm' => OR,
             'Vendor-Specific-Application-Id' => [vsai()],
             'User-Name' => [User], 'Public-Identity' => [Impu]},
    case Outcome of
        drop -> discard;
        {vector, Password} ->
            Ha1 = md5_hex([User, ":", Realm, ":", Password]),
            {reply, ['MAA' | Base#{'Result-Code' => [2001], 'SIP-Number-Auth-Items' => [1],
                'SIP-Auth-Data-Item' =>
                    [#{'SIP-Item-Number' => [1],
                       'SIP-Authentication-Scheme' => [<<"SIP Digest">>],
                       'SIP-Digest-Authenticate' =>
                           [#{'Digest-Realm' => Realm, 'Digest-QoP' => <<"auth">>,
                              'Digest-HA1' => Ha1, 'Digest-Algorithm' => [<<"MD5">>]}]}]}]};
        {rc, C} -> {reply, ['MAA' | Base#{'Result-Code' => [C]}]};
        {exp, C} -> {reply, ['MAA' | Base#{'Experimental-Result' =>
                                                [#{'Vendor-Id' => ?VENDOR_3GPP,
                                                   'Experimental-Result-Code' => C}]}]}
    end;
handle_request(#diameter_packet{header = H}, _Svc, _Peer) ->
    out("REQUEST cmd=~p not served here: 3001", [H#diameter_header.cmd_code]),
    {answer_message, 3001}.

outcome(drop) -> "no answer";
outcome({rc, C}) -> io_lib:format("Result-Code ~p", [C]);
outcome({exp, C}) -> io_lib:format("Experimental-Result-Code ~p", [C]).

str(B) when is_binary(B) -> binary_to_list(B);
str([B | _]) when is_binary(B) -> binary_to_list(B);
str(L) when is_list(L) -> L;
str(_) -> "".

%% Lower-case hex MD5 (RFC 2617 §3.2.2.2 writes HA1 as 32 hex digits).
md5_hex(Data) ->
    list_to_binary([io_lib:format("~2.16.0b", [B]) || <<B>> <= erlang:md5(Data)]).
