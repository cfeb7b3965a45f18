-- KEMI script of kemi.cfg: sync and async dm_send_request, event callback.
function ksr_request_route()
  if KSR.is_method("OPTIONS") then
    local rc = KSR.dmbridge.dm_send_request(16777216, 301, '[{"User-Name":"a"}]')
    KSR.sl.sl_send_reply(299, "rc=" .. rc .. " err=" .. tostring(KSR.pv.get("$dm(error)")))
    return
  end
  if KSR.is_method("REGISTER") then
    KSR.tm.t_newtran()
    local rc = KSR.dmbridge.dm_send_request_async(16777216, 301, '[{"User-Name":"a"}]', "ksr_sar_done")
    if rc == 0 then KSR.x.exit() end
    KSR.tm.t_reply(500, "not suspended rc=" .. rc)
    return
  end
end
function ksr_sar_done(ev)
  KSR.info("sar_done ev=" .. tostring(ev) .. " result=" .. tostring(KSR.pv.get("$dm(result)")) .. "\n")
  KSR.tm.t_reply(504, "result " .. tostring(KSR.pv.get("$dm(result)")))
end
function ksr_dm_event(ev)
  KSR.dmbridge.dm_send_reply('[{"Result-Code":2001}]')
end
