#!/usr/bin/env escript
%%! -smp enable
%% tls_client.escript -- an Erlang/OTP diameter client over TLS (diameter_tcp + ssl), for the
%% bridge's TLS interop tests. Loopback only; exits by itself.
%%
%% tls_client.escript --rport PORT --host ORIGIN_HOST --dest-host HOST --cert F --key F --ca F
%%                    [--inband 0|1] [--n 5]
%%   --inband 0: TLS from the first byte (RFC 6733 §13).
%%   --inband 1: plain CER/CEA with Inband-Security-Id TLS, then TLS (RFC 3588).
%% Sends N test_app Test-Requests (application 16777215, Test-AVP 345678) and prints
%% "RESULT ok=N err=E", or "peer did not come up" when the capabilities exchange fails.
-mode(compile).
-export([main/1, peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

-include_lib("diameter/include/diameter.hrl").

-define(TA_DIA, <<"
@id 16777215
@name ta_dict
@prefix ta
@vendor 999999 TestVendor
@inherits diameter_gen_base_rfc6733
@avp_types
   Test-AVP 345678 Integer32 V
@messages
   TR ::= < Diameter Header: 16777214, REQ, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { Test-AVP }
          [ Destination-Host ]
        * [ AVP ]
   TA ::= < Diameter Header: 16777214, PXY >
          < Session-Id >
          { Result-Code }
          { Origin-Host }
          { Origin-Realm }
          { Test-AVP }
        * [ AVP ]
">>).

main(Args) ->
    O = parse(Args, #{}),
    {ok, [Forms | _]} = diameter_make:codec(?TA_DIA, [return, forms]),
    {ok, Mod, Bin} = compile:forms(Forms, [binary, return_errors]),
    {module, Mod} = code:load_binary(Mod, "ta_dict.erl", Bin),
    ok = ssl:start(),
    ok = diameter:start(),
    Host = opt(host, O),
    Inband = opt(inband, O, "0") =:= "1",
    ok = diameter:start_service(svc, [
        {'Origin-Host', Host}, {'Origin-Realm', "test.local"},
        {'Vendor-Id', 0}, {'Product-Name', "erl-tls-client"},
        {'Host-IP-Address', [{127,0,0,1}]},
        {'Supported-Vendor-Id', [999999]},
        {'Auth-Application-Id', [16777215]},
        {decode_format, map}, {string_decode, false},
        {application, [{alias, ta}, {dictionary, ta_dict}, {module, ?MODULE}]}]),
    true = diameter:subscribe(svc),
    Ssl = [{certfile, opt(cert, O)}, {keyfile, opt(key, O)}, {cacertfile, opt(ca, O)},
           {verify, verify_peer}, {versions, ['tlsv1.3', 'tlsv1.2']},
           {server_name_indication, opt('dest-host', O)}],
    %% diameter_tcp: {ssl_options, true} is a handshake at connection establishment, the
    %% TLS options then being ordinary transport options; {ssl_options, List} is the RFC 3588
    %% upgrade after CER/CEA when Inband-Security-Id TLS was agreed.
    {Caps, SslCfg} = case Inband of
               true -> {[{capabilities, [{'Inband-Security-Id', [1]}]}], [{ssl_options, Ssl}]};
               false -> {[], [{ssl_options, true} | Ssl]}
           end,
    {ok, _} = diameter:add_transport(svc, {connect, Caps ++ [{transport_module, diameter_tcp},
        {transport_config, [{raddr, {127,0,0,1}}, {rport, list_to_integer(opt(rport, O))},
                            {ip, {127,0,0,1}} | SslCfg]},
        {reconnect_timer, 60000}]}),
    receive #diameter_event{info = {up, _, _, _, _}} -> ok;
            #diameter_event{info = {up, _, _, _}} -> ok
    after 10000 -> io:format("peer did not come up~n"), halt(1) end,
    io:format("peer up~n"),
    %% prepare_request runs in a process diameter:call spawns: not this process dictionary.
    persistent_term:put(dest_host, opt('dest-host', O)),
    N = list_to_integer(opt(n, O, "5")),
    Rs = [diameter:call(svc, ta, ['TR', {'Test-AVP', I}], [{timeout, 5000}])
          || I <- lists:seq(1, N)],
    Ok = length([R || {ok, _} = R <- Rs]),
    [io:format("first error: ~0p~n", [E]) || E <- lists:sublist([R || R <- Rs, element(1, R) =/= ok], 1)],
    io:format("RESULT ok=~p err=~p~n", [Ok, N - Ok]),
    diameter:stop_service(svc),
    halt(0).

parse(["--" ++ K, V | T], M) -> parse(T, M#{list_to_atom(K) => V});
parse([], M) -> M.

opt(K, M) -> maps:get(K, M).
opt(K, M, D) -> maps:get(K, M, D).

peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer([Peer | _], _, _Svc, _State) -> {ok, Peer}.

prepare_request(#diameter_packet{msg = [Name | Avps]}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, _}, origin_realm = {OR, DR}} = Caps,
    {send, [Name, {'Session-Id', diameter:session_id(OH)}, {'Origin-Host', OH},
            {'Origin-Realm', OR}, {'Destination-Realm', DR},
            {'Destination-Host', [persistent_term:get(dest_host)]} | Avps]}.

prepare_retransmit(P, Svc, Peer) -> prepare_request(P, Svc, Peer).
handle_answer(#diameter_packet{msg = Msg}, _Req, _Svc, _Peer) -> {ok, Msg}.
handle_error(Reason, _Req, _Svc, _Peer) -> {error, Reason}.
handle_request(_Pkt, _Svc, _Peer) -> {answer_message, 3001}.
