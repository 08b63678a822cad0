"""The suite's own signer must reproduce the reference's two test vectors (§2).

If these fail, every raw-HTTP test below is suspect, not the server.
"""

from tcraw import tc3_signature, v1_signature, v1_string_to_sign

SID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
SKEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"


def test_tc3_vector():
    sig = tc3_signature(
        SKEY,
        method="POST",
        host="cvm.tencentcloudapi.com",
        content_type="application/json",
        query="",
        payload=b'{"ImageIds": ["img-gvbnzy6f"]}',
        timestamp=1551113065,
    )
    assert sig == "f3025300fad1b3d803eaef6edcfe9aebc95c769966ce3761b0bce217f270c283"


def test_v1_vector():
    params = {
        "Action": "DescribeImages",
        "ImageIds.0": "img-gvbnzy6f",
        "Nonce": "11886",
        "Region": "ap-guangzhou",
        "SecretId": SID,
        "SignatureMethod": "HmacSHA256",
        "Timestamp": "1465185768",
        "Version": "2017-03-12",
    }
    assert v1_string_to_sign("GET", "cvm.tencentcloudapi.com", params) == (
        "GETcvm.tencentcloudapi.com/?Action=DescribeImages&ImageIds.0=img-gvbnzy6f&Nonce=11886"
        "&Region=ap-guangzhou&SecretId=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE&SignatureMethod=HmacSHA256"
        "&Timestamp=1465185768&Version=2017-03-12"
    )
    assert v1_signature(SKEY, "GET", "cvm.tencentcloudapi.com", params, "HmacSHA256") == (
        "TXeUTuv/k2CHXx8Vb15+S4PGF5sjiwe6veErNhAw7S4="
    )


def test_signer_agrees_with_the_official_sdk():
    """A second, independent check: the SDK's own Sign helpers on a fresh input."""
    from tencentcloud.common.sign import Sign

    params = {"Action": "DescribeImages", "Nonce": "7", "Region": "ap-shanghai", "SecretId": SID,
              "SignatureMethod": "HmacSHA1", "Timestamp": "1700000000", "Version": "2017-03-12",
              "Filters.0.Name": "image-name", "Filters.0.Values.0": "a b+c/d"}
    msg = v1_string_to_sign("POST", "127.0.0.1:9000", params)
    assert v1_signature(SKEY, "POST", "127.0.0.1:9000", params, "HmacSHA1") == Sign.sign(SKEY, msg, "HmacSHA1")
